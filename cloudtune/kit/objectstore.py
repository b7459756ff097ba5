"""Content-addressed uploads over a small object-store protocol (S3, GCS, Azure Blob implement it).

Every planned upload's destination carries its content hash (`.../inputs/<sha256>/<name>`,
`.../bundles/<sha256>.tar.gz`), so an object that exists under its full key already holds those bytes:
"already there" is decided by the key, never by size. Before anything is sent, each source is hashed again and
refused when it no longer matches the plan, so nothing is ever stored under a hash its content does not have.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from cloudtune.errors import InvalidInput
from cloudtune.hashing import digest
from cloudtune.kit.staging import stage
from cloudtune.plan import Upload
from cloudtune.secretfiles import input_files

PROGRESS_BYTES = 8 * 1000 * 1000  # files at least this large report progress


class ObjectStore(Protocol):
    """What the upload and download steps need from a cloud's object store. `scheme` is the URI scheme it serves
    (s3, gs)."""

    scheme: str

    def exists(self, bucket: str, key: str) -> bool:
        """True when an object is stored under exactly `key`."""
        ...

    def put(self, bucket: str, key: str, path: Path, progress: Callable[[int], None] | None) -> None:
        """Store the file at `path` under `key`; `progress(n)` is called with byte counts as they are sent."""
        ...

    def list_keys(self, bucket: str, prefix: str, limit: int) -> list[str]:
        """At most `limit` keys that start with `prefix`, in lexicographic order (one list call)."""
        ...

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """Every object whose key starts with `prefix`, as (key, size in bytes), in lexicographic order (all pages)."""
        ...

    def get(self, bucket: str, key: str, path: Path, progress: Callable[[int], None] | None) -> str | None:
        """Write the object `key` to the file `path` (created or replaced); `progress(n)` is called with byte counts
        as they arrive. Returns the object's MD5 as the service states it (32 hex digits), or None when the service
        states none that is the MD5 of the bytes (an S3 multipart or KMS-encrypted object's ETag is not)."""
        ...


def split_uri(uri: str) -> tuple[str, str, str]:
    """`scheme://bucket/key` -> (scheme, bucket, key)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"{uri!r} is not an object-store URI")
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


class Progress:
    """A transfer callback: a line on stderr at every tenth of `size` bytes (`verb`: uploading, downloading)."""

    def __init__(self, what: str, size: int, verb: str = "uploading") -> None:
        self.what, self.size, self.done, self.shown, self.verb = what, size, 0, -1, verb

    def __call__(self, n: int) -> None:
        self.done += n
        tenth = int(10 * self.done / max(self.size, 1))
        if tenth != self.shown:
            self.shown = tenth
            print(f"[cloudtune] {self.verb} {self.what}: {self.done / 1e6:.1f}/{self.size / 1e6:.1f} MB",
                  file=sys.stderr, flush=True)


def verify_source(up: Upload) -> Path:
    """The upload's source, after checking that it still holds the bytes the plan hashed."""
    src = Path(up.source)
    if not src.exists():
        raise InvalidInput(f"{up.source} is gone since the plan was made", fix="plan and launch again")
    size, sha = digest(src)
    if sha != up.sha256:
        raise InvalidInput(f"{up.source} changed since the plan was made (sha256 {up.sha256[:12]} planned, {sha[:12]} now)",
                           fix="launch again: the new plan carries the new hash")
    return src


def _files(src: Path, key: str) -> list[tuple[Path, str]]:
    """(file, object key) of what is sent: a directory's files without its credential files (as the plan hashed)."""
    if src.is_dir():
        prefix = key if key.endswith("/") else key + "/"
        return [(f, prefix + rel) for f, rel in input_files(src)[0]]
    return [(src, key)]


def upload_all(uploads: Iterable[Upload], store: ObjectStore, call: Callable[..., object]) -> int:
    """Send what is missing; returns the bytes sent (0 when everything was already there).

    `call(fn, *args, what=...)` runs each store operation under the launcher's retry policy (kit.retry.Caller.call).
    """
    total = 0
    for up in uploads:
        stage(up)
        src = verify_source(up)
        scheme, bucket, key = split_uri(up.destination)
        files = _files(src, key)
        present: set[str] | None = None
        if len(files) > 1:  # a folder (a wheelhouse holds ~80 wheels): one listing, not a look-up per file
            listed = call(store.list_objects, bucket, key, what=f"list {up.destination}") or []
            present = {k for k, _ in listed}
        for path, object_key in files:
            uri = f"{scheme}://{bucket}/{object_key}"
            there = object_key in present if present is not None else \
                call(store.exists, bucket, object_key, what=f"look up {uri}")
            if there:
                continue
            size = path.stat().st_size
            progress = Progress(uri, size) if size >= PROGRESS_BYTES else None
            call(store.put, bucket, object_key, path, progress, what=f"upload {uri}")
            total += size
    if total:
        print(f"[cloudtune] uploaded {total} bytes", file=sys.stderr)
    return total


# ------------------------------------------------------------------------------------------ remote inputs
def prefix_note(name: str, uri: str) -> str | None:
    """The plan note for a remote input that a cloud reads as a key prefix (SageMaker's S3Prefix): without a
    trailing `/` it would also match sibling keys; None when the URI ends with `/` (a folder, exactly)."""
    if uri.endswith("/"):
        return None
    _, bucket, key = split_uri(uri)
    leaf = key.rsplit("/", 1)[-1] or bucket
    return (f"input {name}: {uri} has no trailing '/': as a prefix it would also match siblings such as "
            f"{leaf}-old/ or {leaf}.bak; submit looks it up once and sends {uri}/ for a folder, or the object alone")


_MARKER_PAGE = 10  # keys listed to tell a folder of files from one of folder markers only


def resolve_input(store: ObjectStore, uri: str, call: Callable[..., object], *, prefix_match: bool) -> str:
    """What a remote input really is, looked up once before anything is paid for: the URI to send.

    - `.../dir/` (a folder, as written): returned when at least one file is under it (folder markers, the
      zero-byte `dir/` keys a console creates, are not files);
    - `.../name`: a folder when objects are under `name/` (-> `.../name/`), else the object `name` itself
      (returned as it is);
    - nothing there, or both an object and a folder of that name: InvalidInput naming the URI and the fix.
    With `prefix_match` (the cloud reads the URI as a key prefix, as SageMaker's S3Prefix does), an object whose
    name is also the start of other keys (`train.jsonl` and `train.jsonl.bak`) is refused: the channel would get
    both. `call(fn, *args, what=...)` runs each look-up under the launcher's retry policy."""
    scheme, bucket, key = split_uri(uri)

    def keys(prefix: str, limit: int) -> list[str]:
        return list(call(store.list_keys, bucket, prefix, limit, what=f"look up {scheme}://{bucket}/{prefix}") or [])

    def files_under(prefix: str) -> str:
        """"files", "empty" (nothing, or only the zero-byte folder markers a console creates) or "none"."""
        listed = keys(prefix, _MARKER_PAGE)
        if any(not k.endswith("/") for k in listed) or len(listed) == _MARKER_PAGE:
            return "files"  # (a full page of markers: more may follow; the cloud will see)
        return "empty" if listed else "none"

    if not key or key.endswith("/"):
        found = files_under(key)
        if found == "files":
            return uri
        what = "only empty folders" if found == "empty" else "no object"
        raise InvalidInput(f"input {uri}: {what} under this folder", fix="check the URI (and that the upload "
                           "finished); a folder URI ends with '/' and holds the files, e.g. " + f"{uri}train.jsonl")
    under = files_under(key + "/")
    if under == "empty":
        raise InvalidInput(f"input {uri}: the folder {uri}/ holds only empty folders",
                           fix="check the URI (and that the upload finished)")
    folder = under == "files"
    matches = keys(key, 2)
    is_object = key in matches
    if folder and is_object:
        raise InvalidInput(f"input {uri} names both an object and a folder ({uri}/...)",
                           fix=f"give {uri}/ for the folder, or move the object so that its name is not a folder's")
    if folder:
        return uri + "/"
    if is_object:
        others = [k for k in matches if k != key]
        if prefix_match and others:
            raise InvalidInput(f"input {uri} is an object, but as a prefix it also matches {scheme}://{bucket}/{others[0]}: "
                               "the job would receive both", fix="move the object into a folder of its own and give "
                               "that folder's URI ending with '/'")
        return uri
    near = f" (the nearest key is {scheme}://{bucket}/{matches[0]})" if matches else ""
    raise InvalidInput(f"input {uri}: no such object or folder{near}", fix="check the bucket and the path in the spec's `inputs`")


def local_input_upload(path: Path, base_uri: str) -> Upload:
    """The planned upload of a local input: stored under its content hash, `<base>/inputs/<sha256>/<name>` (a
    directory ends with `/`), so an unchanged input is never sent twice."""
    size, sha = digest(path)
    return Upload(str(path), f"{base_uri}/inputs/{sha}/{path.name}" + ("/" if path.is_dir() else ""), size, sha)
