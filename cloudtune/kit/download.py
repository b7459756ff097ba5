"""Fetching a job's output, the same way for every launcher: every object under an object-store prefix (or a local
directory) into a directory, checked; and the finished download put in place at once (a tar.gz is unpacked by
`cloudtune.data.archives.safe_extract`).

What is checked for each object (or file) fetched:
- its size: the bytes written must equal the size the listing gave (a short or padded download is an error);
- its MD5, when the store states one for the object (`ObjectStore.get` returns it: GCS's md5Hash when the service
  sends it; S3's ETag for an object stored in one part without KMS encryption, where the ETag is the MD5).
A mismatch is a CloudtuneError naming the object (exit 1); nothing is put in place.

Where a download lands (`into_place`): a hidden temp dir beside the target, renamed onto the target at the end, so
an interrupted download leaves nothing half-written at the target (the temp dir is removed when Python can; a
killed process leaves `.<name>.partial-*` beside it). A non-empty target is refused unless `force`, which adds the
files to it (replacing files of the same name) and never removes anything else. Stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from cloudtune.errors import CloudtuneError, InvalidInput
from cloudtune.kit.objectstore import Progress, split_uri

if TYPE_CHECKING:
    from cloudtune.kit.objectstore import ObjectStore
    from cloudtune.launcher import JobRef

CHUNK = 1 << 20


class DownloadError(CloudtuneError):
    """What was fetched is not what the store holds (size or MD5), or cannot be written: exit 1."""


# ------------------------------------------------------------------------------------------ object stores
def _listing(store: "ObjectStore", uri: str, call: Callable[..., object]) -> tuple[str, list[tuple[str, int]]]:
    """(the key prefix that relative paths start after, [(key, size)]) for `uri`: the object itself when `uri`
    names one (and does not end with '/'), else every object under `uri/` (folder markers left out)."""
    scheme, bucket, key = split_uri(uri)
    listed = list(call(store.list_objects, bucket, key, what=f"list {uri}") or [])
    if key and not key.endswith("/"):
        exact = [(k, int(s)) for k, s in listed if k == key]
        if exact:
            return key.rsplit("/", 1)[0] + "/" if "/" in key else "", exact
        key += "/"
    return key, [(k, int(s)) for k, s in listed if k.startswith(key) and not k.endswith("/")]


def relative_path(prefix: str, key: str, uri: str) -> PurePosixPath:
    """The path of object `key` below `prefix`, refused (InvalidInput) when it would leave the download directory
    (a `..` part, an absolute key) or is empty."""
    rel = key[len(prefix):]
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/"):
        raise InvalidInput(f"{uri}: the object key {key!r} does not name a file inside the download directory",
                           fix="rename that object (no '..' parts), or download the others yourself")
    return PurePosixPath(*parts)


def download_prefix(store: "ObjectStore", uri: str, dest: Path, call: Callable[..., object], *,
                    progress: bool = True, missing_ok: bool = False) -> int:
    """Download `uri` into the directory `dest`: every object under the folder `uri` (`scheme://bucket/prefix[/]`)
    at its path below the prefix, or, when `uri` names one object, that object as `dest/<its name>`.

    Returns the bytes written. Each object is checked (size, and MD5 where the store states one; see the module
    docstring). `call(fn, *args, what=...)` runs each store operation under the launcher's retry policy
    (`kit.retry.Caller.call`). `progress`: a line on stderr at every tenth of the total. Nothing under `uri`:
    InvalidInput, or 0 with `missing_ok`."""
    scheme, bucket, _ = split_uri(uri)
    prefix, objects = _listing(store, uri, call)
    if not objects:
        if missing_ok:
            return 0
        raise InvalidInput(f"nothing is stored under {uri}", fix="check that the job wrote its model there "
                           "(`cloudtune logs JOB`), and that these credentials can list the bucket")
    meter = Progress(uri, sum(size for _, size in objects), verb="downloading") if progress else None
    for key, size in objects:
        target = dest.joinpath(*relative_path(prefix, key, uri).parts)
        where = f"{scheme}://{bucket}/{key}"
        _make_parent(target, dest, where)
        md5 = call(store.get, bucket, key, target, meter, what=f"download {where}")
        check_file(target, size, md5 if isinstance(md5, str) else None, where)
    return sum(size for _, size in objects)


def _make_parent(target: Path, dest: Path, where: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # keys `a` and `a/b`: a file and a folder of one name
        raise InvalidInput(f"{where}: its folder {target.parent.relative_to(dest)} is also an object's name",
                           fix="rename one of the two objects, or download the others yourself") from None
    if target.is_dir():
        raise InvalidInput(f"{where}: its name is also a folder of other objects",
                           fix="rename one of them, or download the others yourself")


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, size: int, md5: str | None, where: str) -> None:
    """DownloadError unless the file at `path` holds `size` bytes and (when `md5` is given) has that MD5."""
    got = path.stat().st_size if path.is_file() else -1
    if got != size:
        raise DownloadError(f"{where}: {max(got, 0)} bytes written, {size} expected", fix="download again")
    if md5 and file_md5(path) != md5.lower():
        raise DownloadError(f"{where}: the bytes written do not match the object's MD5 {md5}", fix="download again")


# ------------------------------------------------------------------------------------------ local directories
def copy_tree(src: Path, dest: Path, *, what: str = "", progress: bool = True) -> int:
    """Copy every file under the directory `src` into `dest` (same relative paths); returns the bytes copied.

    Each copy's size is checked against its source. A symbolic link is refused (InvalidInput): it could point
    anywhere on this machine. `src` missing: InvalidInput."""
    if not src.is_dir():
        raise InvalidInput(f"{what or src}: no such directory", fix="the job's files were removed (`cloudtune clean "
                           "--with-model`?) or never written; see `cloudtune logs JOB`")
    files: list[tuple[Path, int]] = []
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            raise InvalidInput(f"{path} is a symbolic link; a download copies files only",
                               fix="copy the directory yourself if the link is meant to be there")
        if path.is_file():
            files.append((path, path.stat().st_size))
    meter = Progress(what or str(src), sum(s for _, s in files), verb="copying") if progress else None
    for path, size in files:
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        check_file(target, size, None, str(path))
        if meter is not None:
            meter(size)
    return sum(s for _, s in files)


# ------------------------------------------------------------------------------------------ putting it in place
def check_target(dest: Path, force: bool) -> None:
    """InvalidInput unless `dest` can receive a download: missing, an empty directory, or (with `force`) any
    directory."""
    if dest.exists() and not dest.is_dir():
        raise InvalidInput(f"{dest} exists and is not a directory", fix="give a directory path (a new one is made)")
    if dest.is_dir() and not force and next(dest.iterdir(), None) is not None:
        raise InvalidInput(f"{dest} exists and is not empty",
                           fix="give a new directory, or pass --force to add the job's files to it (files of the same "
                               "name are replaced; nothing else is removed)")


@contextmanager
def into_place(dest: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `dest`; when the block ends without an error, its content becomes
    `dest` (renamed onto a missing or empty `dest`; with `force`, added to a non-empty one). The temp directory is
    removed in every case. Refusals (see `check_target`) happen before anything is written."""
    dest = Path(os.path.abspath(dest))
    check_target(dest, force)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    except OSError as exc:
        raise InvalidInput(f"cannot write beside {dest}: {exc.strerror or exc}",
                           fix="choose a directory you can write to") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary directory
        yield tmp
        check_target(dest, force)  # made meanwhile by someone else?
        if not dest.exists() or next(dest.iterdir(), None) is None:
            os.replace(tmp, dest)
        else:
            _merge(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge(src: Path, dest: Path) -> None:
    """Move `src`'s content into the existing directory `dest`; a file and a folder of one name is refused before
    anything moves."""
    clash = _clash(src, dest)
    if clash is not None:
        raise InvalidInput(f"{dest / clash} is a {'folder' if (dest / clash).is_dir() else 'file'} in the way of the "
                           "job's file or folder of that name", fix="give a new directory")
    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            os.replace(path, target)


def _clash(src: Path, dest: Path) -> Path | None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dest / rel
        if target.exists() or target.is_symlink():
            if path.is_dir() != (target.is_dir() and not target.is_symlink()):
                return rel
    return None


CHECKPOINTS = "checkpoints"


def checkpoints_dir(dest: Path) -> Path:
    """Where a download's checkpoints go: `dest/checkpoints`, refused (InvalidInput) when the model already holds a
    file or folder of that name."""
    path = dest / CHECKPOINTS
    if path.exists() or path.is_symlink():
        raise InvalidInput(f"the job's model holds its own {CHECKPOINTS!r}, where the checkpoints would go",
                           fix="download without --checkpoints, and copy the checkpoints yourself")
    return path


@contextmanager
def scratch_dir(dest: Path) -> Iterator[Path]:
    """A private temp directory beside `dest` (on the same file system), removed when the block ends: where an
    archive is fetched before it is unpacked into `dest`."""
    path = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def note(message: str) -> None:
    print(f"[cloudtune] {message}", file=sys.stderr, flush=True)


def model_uri_of(ref: "JobRef", fix: str) -> str:
    """The model location `ref` recorded at submit; InvalidInput (with `fix`, the cloud's way to fetch it by hand)
    when it has none."""
    if not ref.model_uri:
        raise InvalidInput(f"job {ref.job_id} has no model location recorded", fix=fix)
    return ref.model_uri


def download_outputs(store: "ObjectStore", call: Callable[..., object], model_uri: str, dest: Path,
                     checkpoint_uri: str | None = None) -> Path:
    """A job's model folder `model_uri` into `dest` (see `download_prefix`); with `checkpoint_uri`, its checkpoints
    (`download_checkpoints`). Returns `dest`."""
    download_prefix(store, model_uri, dest, call)
    if checkpoint_uri is not None:
        download_checkpoints(store, call, checkpoint_uri, dest)
    return dest


def download_checkpoints(store: "ObjectStore", call: Callable[..., object], uri: str, dest: Path) -> None:
    """Every object under `uri` into dest/checkpoints, with a note (not an error) when there are none."""
    if not download_prefix(store, uri, checkpoints_dir(dest), call, missing_ok=True):
        note(f"no checkpoints under {uri}")
