"""Complete-or-absent checkpoints without a directory rename: files written under their final names, fsynced, then
a manifest (sizes + chunk sha256) written last as the completeness marker.

Layout under the checkpoint dir:

* `checkpoint-<step>` (or `checkpoint-<step>-<n>` when that name is held by a corrupt checkpoint, which is never
  deleted): a checkpoint. It is complete when it holds a valid `cloudtune-manifest.json` (below).
* `.cloudtune-unfinished` inside a checkpoint dir: written first when a save (or a deletion) begins and removed only
  after the manifest is durable, so a checkpoint dir holding it and no valid manifest is this code's own unfinished
  save or rotation, removed by the next save. A dir without a valid manifest and without it (a foreign or damaged
  one) is never deleted.
* `.cloudtune-tmp-*`: temp dirs of earlier versions (which committed by renaming); removed on the next save.

A checkpoint is *complete* when its manifest parses and every file it lists exists with the recorded size and
sha256 (of each `chunk_bytes` piece; manifests of format 1 hold one sha256 per file and still verify). Anything else
is skipped with a warning, never loaded and never deleted (except this code's own unfinished saves, see above).

Why no rename: on Vertex AI the checkpoint dir is under `/gcs` (Cloud Storage FUSE), which refuses directory renames
unless mounted with `--rename-dir-limit` (GoogleCloudPlatform/gcsfuse docs/semantics.md); on Azure ML it is an
`rw_mount` output (blobfuse), where "directory renames recursively enumerate all files in the directory and rename
each file individually" and a file rename is a copy then a delete (learn.microsoft.com, blobfuse2-compare-linux-file-
system): neither is atomic. Writing one object last is atomic on every one of them (an object appears whole on
close/fsync), so the manifest is the commit point everywhere, local disks included.

Where the cost goes, and why it is small:

* Complete-or-absent comes from the order: every file is fsynced, then the manifest is written and fsynced, then the
  directory is fsynced. A crash at any point leaves either no manifest (an incomplete checkpoint, never loaded) or a
  whole one. Rotation retires a checkpoint in the reverse order: unfinished marker, manifest removed, then the files.
* Sizes catch a truncated copy (a partial S3 restore, a cut-off upload through a GCS/blob fuse mount); the chunk
  hashes also catch same-size damage (a bit flip, a stale file of another attempt). Chunks are hashed in parallel
  threads (hashlib and file reads release the GIL) while the fsyncs run.
* `commit(..., background=True)` runs all of that in one thread on the writing process while training goes on. The
  manifest still waits for the fsyncs, so a crash guarantee is unchanged; what moves off the critical path is only the
  time until the checkpoint is complete. The next `prepare`/`commit`/`latest_complete` and `wait()` join it first.
* On resume under torch.distributed (gloo/nccl), rank 0 verifies in full and broadcasts its choice; the other
  ranks check only that checkpoint's manifest and sizes (a stat per file), so the bytes are hashed once, not once
  per rank.

Fault injection (a real code path, used by the fault tests): `CLOUDTUNE_FAULT_AT=<stage>[@<step>][:<action>][,...]`
makes the save of step `<step>` (any step when omitted) act at `<stage>` (one of FAULT_STAGES; `exit` is the stop
path after the SIGTERM checkpoint) once per process: `sigterm`
(the default) signals this process, `sigterm-group` its whole process group (what a cloud's stop does), `stall` blocks
that thread for good (a hung collective or mount). Unset, `fault_point` is a dictionary lookup. With
`CLOUDTUNE_FAULT_ONCE_DIR` set, each entry acts once in all the processes that share that directory (a marker file
made there first wins): once per job, across its ranks, nodes and retries, so a retry that resumes before the
fault's step runs on past it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MANIFEST_NAME = "cloudtune-manifest.json"
MANIFEST_FORMAT = 2
TMP_PREFIX = ".cloudtune-tmp-"  # temp dirs of earlier versions (rename commits): removed by the next save
UNFINISHED_NAME = ".cloudtune-unfinished"  # in a checkpoint dir while it is being written or deleted
_NOT_LISTED = {MANIFEST_NAME, UNFINISHED_NAME}
FAULT_VAR = "CLOUDTUNE_FAULT_AT"
FAULT_ONCE_VAR = "CLOUDTUNE_FAULT_ONCE_DIR"
FAULT_STAGES = ("before", "write", "publish", "rotate", "commit-thread", "exit")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-(\d+))?$")
CHUNK_BYTES = 64 << 20  # one sha256 per 64 MiB piece: the unit of parallel hashing
_READ_BYTES = 4 << 20
_MAX_HASH_THREADS = 8  # other ranks share the machine's cores (data loading); hashing is memory-bound past this


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    attempt: int  # the `-<n>` suffix; 0 for the plain name

    @property
    def order(self) -> tuple[int, int]:
        return (self.step, self.attempt)


def _hash_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_HASH_THREADS, cores))


def _hash_range(path: Path, offset: int, length: int) -> str:
    """sha256 of `length` bytes of `path` from `offset` (fewer if the file is shorter)."""
    digest = hashlib.sha256()
    buf = bytearray(min(_READ_BYTES, max(length, 1)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            n = fh.readinto(view[: min(len(buf), left)])
            if not n:
                break
            digest.update(view[:n])
            left -= n
    return digest.hexdigest()


def _pieces(size: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of a `size`-byte file; an empty file is one empty chunk."""
    return [(off, min(chunk, size - off)) for off in range(0, size, chunk)] or [(0, 0)]


def _fsync_path(path: Path) -> None:
    """fsync a file or directory; filesystems that refuse (some fuse mounts) are left as they are."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_fired: set[str] = set()


def fault_point(stage: str, step: int) -> None:
    """Act as `CLOUDTUNE_FAULT_AT` asks when the save of `step` reaches `stage` (see the module doc); each entry of
    its comma-separated list acts at most once per process. Nothing happens when the variable is unset or names
    other stages or steps."""
    wanted = os.environ.get(FAULT_VAR)
    if not wanted:
        return
    for entry in (e.strip() for e in wanted.split(",")):
        where, _, action = entry.partition(":")
        name, _, at = where.partition("@")
        if name != stage or entry in _fired or (at and int(at) != int(step)):
            continue
        _fired.add(entry)
        if not _first_in_job(entry):
            continue
        print(f"[cloudtune] fault injection ({FAULT_VAR}): {action or 'sigterm'} at {stage}, step {step}", flush=True)
        if action == "stall":
            threading.Event().wait()
        elif action == "sigterm-group":
            os.killpg(os.getpgrp(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)


def _first_in_job(entry: str) -> bool:
    """Whether this process is the first of those sharing FAULT_ONCE_VAR's directory to reach `entry` (it makes the
    entry's marker there with O_EXCL); True when the variable is unset."""
    where = os.environ.get(FAULT_ONCE_VAR)
    if not where:
        return True
    Path(where).mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(Path(where) / re.sub(r"[^A-Za-z0-9@.-]", "_", entry), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _digests(directory: Path, layout: dict[str, list[tuple[int, int]]], fsync: bool = False) -> dict[str, list[str]]:
    """sha256 of each (offset, length) piece of each file, hashed in parallel; with `fsync`, every file is also
    fsynced (those calls are queued first so the disk writes overlap the hashing). Raises OSError as reading does."""
    with ThreadPoolExecutor(max_workers=_hash_threads() + (1 if fsync else 0)) as pool:
        syncs = [pool.submit(_fsync_path, directory / rel) for rel in layout] if fsync else []
        futures: dict[str, list[Future[str]]] = {
            rel: [pool.submit(_hash_range, directory / rel, off, length) for off, length in pieces]
            for rel, pieces in layout.items()
        }
        out = {rel: [f.result() for f in fs] for rel, fs in futures.items()}
        for f in syncs:
            f.result()
    return out


def write_manifest(directory: Path, step: int, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Fsync every file under `directory`, record its size and chunk sha256s, then write (and fsync) the manifest
    last, and fsync the directory. When this returns, `directory` is a complete checkpoint (the manifest is the
    commit point; nothing is renamed). Raises OSError as reading or writing does."""
    sizes = {
        path.relative_to(directory).as_posix(): path.stat().st_size
        for path in sorted(p for p in directory.rglob("*") if p.is_file())
        if path.relative_to(directory).as_posix() not in _NOT_LISTED
    }
    digests = _digests(directory, {rel: _pieces(size, chunk_bytes) for rel, size in sizes.items()}, fsync=True)
    for sub in {p.parent for p in directory.rglob("*") if p.is_file()} - {directory}:
        _fsync_path(sub)
    _fsync_path(directory)  # every file's name is durable before the manifest that lists it
    fault_point("publish", step)
    files = {rel: {"size": size, "sha256": digests[rel]} for rel, size in sizes.items()}
    manifest = {"format": MANIFEST_FORMAT, "step": int(step), "created": time.time(), "chunk_bytes": int(chunk_bytes),
                "files": files}
    with open(directory / MANIFEST_NAME, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_path(directory)
    return manifest


def _read_manifest(directory: Path) -> tuple[dict | None, str | None]:
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        return None, f"manifest {MANIFEST_NAME} is missing (the checkpoint was not completed)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return None, "manifest lists no files"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"manifest is unreadable: {exc}"
    return manifest, None


def _expected(manifest: dict, rel: str, info: object) -> tuple[int, list[str], list[tuple[int, int]]]:
    """(size, expected digests, pieces) of one manifest entry; raises KeyError/TypeError/ValueError if malformed."""
    size = int(info["size"])  # type: ignore[index]
    recorded = info["sha256"]  # type: ignore[index]
    if isinstance(recorded, str):  # format 1: one sha256 of the whole file
        return size, [recorded], [(0, size)]
    chunk = int(manifest["chunk_bytes"])
    if chunk <= 0 or not isinstance(recorded, list) or len(recorded) != len(_pieces(size, chunk)):
        raise ValueError(f"{rel}: chunk digests do not fit the size")
    return size, [str(d) for d in recorded], _pieces(size, chunk)


def verify(directory: Path, full: bool = True) -> str | None:
    """None when `directory` is a complete checkpoint, else the reason it is not.

    `full=False` checks the manifest and every listed file's presence and size only (no bytes read); `full=True`
    also checks every sha256. Files the manifest does not list are ignored."""
    manifest, reason = _read_manifest(directory)
    if manifest is None:
        return reason
    wanted: dict[str, tuple[list[str], list[tuple[int, int]]]] = {}
    for rel, info in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        try:
            size, digests, pieces = _expected(manifest, rel, info)
        except (KeyError, TypeError, ValueError):
            return f"manifest entry for {rel} is malformed"
        try:
            actual_size = path.stat().st_size
        except OSError as exc:  # removed while we looked (an older checkpoint being rotated out)
            return f"{rel} is unreadable: {exc}"
        if actual_size != size:
            return f"{rel} has {actual_size} bytes, manifest says {size}"
        wanted[rel] = (digests, pieces)
    if not full:
        return None
    try:
        actual = _digests(directory, {rel: pieces for rel, (_, pieces) in wanted.items()})
    except OSError as exc:
        return f"a file is unreadable: {exc}"
    for rel, (digests, _) in wanted.items():
        if actual[rel] != digests:
            return f"{rel} does not match its sha256 in the manifest"
    return None


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """Checkpoint-named directories under `root`, oldest first (complete or not)."""
    found: list[Checkpoint] = []
    if not root.is_dir():
        return found
    for child in root.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append(Checkpoint(child, int(match.group(1)), int(match.group(2) or 0)))
    return sorted(found, key=lambda c: c.order)


def _process_group() -> tuple[int, int] | None:
    """(rank, world size) when a gloo/nccl torch.distributed group of more than one process is up, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    backend = str(dist.get_backend())
    if "gloo" not in backend and "nccl" not in backend:
        return None  # e.g. PyTorch/XLA: every process verifies for itself
    return dist.get_rank(), dist.get_world_size()


class CheckpointStore:
    """Find, write and rotate complete checkpoints in one directory.

    `warn` receives human-readable warning lines (the caller decides whether this process prints).
    Full verification results are cached, so each checkpoint is hashed at most once per process; `verified_in_full`
    lists the checkpoints this process hashed. At most one commit runs at a time; a background commit's error is
    raised by the next `wait()` (which `prepare`, `commit` and `latest_complete` call first).
    """

    def __init__(self, root: Path, keep: int, warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.keep = max(1, int(keep))
        self._warn = warn or (lambda _msg: None)
        self._status: dict[Path, str | None] = {}
        self._warned: set[Path] = set()
        self._pending: threading.Thread | None = None
        self._pending_error: BaseException | None = None
        self.verified_in_full: list[Path] = []
        self.protected: int | None = None  # the step whose checkpoints rotation never deletes (train.keep_best)

    def protect(self, step: int | None) -> None:
        """Keep the checkpoints of `step` through every rotation (they do not count towards `keep`); the step
        protected before is released (rotated away as usual at the next commit). None protects nothing."""
        self.protected = None if step is None else int(step)

    # ----- reading -----
    def problem(self, ckpt: Checkpoint, full: bool = True) -> str | None:
        """Why `ckpt` is not complete (None if it is); `full=False` checks manifest and sizes only (not cached)."""
        if ckpt.path in self._status:
            return self._status[ckpt.path]
        if not full:
            return verify(ckpt.path, full=False)
        self._status[ckpt.path] = verify(ckpt.path)
        self.verified_in_full.append(ckpt.path)
        return self._status[ckpt.path]

    def _newest_complete(self) -> Checkpoint | None:
        for ckpt in reversed(list_checkpoints(self.root)):
            reason = self.problem(ckpt)
            if reason is None:
                return ckpt
            self._report(ckpt, reason)
        return None

    def latest_complete(self) -> Checkpoint | None:
        """The newest complete checkpoint; incomplete/corrupt newer ones are reported and skipped.

        Collective under a gloo/nccl process group of more than one process (every rank must call it): rank 0
        verifies in full and broadcasts its choice; another rank returns that checkpoint if its manifest and sizes
        check out here, else None (this machine does not see the same checkpoint dir: the caller's agreement check
        then fails loudly)."""
        self.wait()
        group = _process_group()
        if group is None:
            return self._newest_complete()
        import torch.distributed as dist

        chosen = self._newest_complete() if group[0] == 0 else None
        box = [chosen.path.name if chosen else None]
        dist.broadcast_object_list(box, src=0)
        if group[0] == 0 or box[0] is None:
            return chosen
        mine = next((c for c in list_checkpoints(self.root) if c.path.name == box[0]), None)
        reason = "it is not there" if mine is None else self.problem(mine, full=False)
        if reason is not None:
            self._warn(f"warning: rank {group[0]} cannot use checkpoint {self.root / box[0]} chosen by rank 0: {reason}")
            return None
        return mine

    def _report(self, ckpt: Checkpoint, reason: str) -> None:
        if ckpt.path not in self._warned:
            self._warned.add(ckpt.path)
            self._warn(f"warning: skipping incomplete or corrupt checkpoint {ckpt.path}: {reason}; it is left in place, never loaded")

    # ----- writing -----
    def prepare(self, step: int) -> Path:
        """Wait for a running commit, remove leftovers of this code's own unfinished saves (and earlier versions'
        temp dirs), then create the dir that step `step` is written into, marked unfinished, and return it. One
        process per checkpoint dir calls this; the dir is never an existing complete or foreign checkpoint."""
        self.wait()
        self.root.mkdir(parents=True, exist_ok=True)
        for child in list(self.root.iterdir()):
            if child.name.startswith(TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            elif CHECKPOINT_RE.match(child.name) and self.unfinished(child):
                self._status.pop(child, None)
                shutil.rmtree(child, ignore_errors=True)
        attempt = 0
        while True:
            path = self.root / (f"checkpoint-{step}" + (f"-{attempt}" if attempt else ""))
            if not path.exists():
                break
            attempt += 1
        self.open_for_write(path)
        return path

    @staticmethod
    def open_for_write(path: Path) -> None:
        """Create `path` and mark it unfinished (the marker is durable before any checkpoint file is written), unless
        it already holds a manifest (then it is complete, or damaged: left as it is)."""
        path.mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST_NAME).exists():
            return
        with open(path / UNFINISHED_NAME, "w", encoding="utf-8") as fh:
            fh.write("a checkpoint is being written or deleted here; it is complete only with its manifest\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_path(path)

    @staticmethod
    def unfinished(path: Path) -> bool:
        """True for this code's own unfinished save or deletion: the marker is there and no readable manifest (one
        killed mid-write does not parse). A checkpoint whose manifest was written is never unfinished, even damaged
        later: it is kept, as every damaged checkpoint is."""
        return (path / UNFINISHED_NAME).exists() and _read_manifest(path)[0] is None

    def commit(self, tmp: Path, step: int, background: bool = False,
               on_done: Callable[[Path], None] | None = None) -> Path | None:
        """Write the manifest of `tmp` (the dir `prepare` returned) last, which makes it complete, then rotate;
        `on_done(path)` is called once it is complete.

        Returns the checkpoint's path; with `background`, returns None at once and does the work in a thread (the
        files in `tmp` must not change any more); `wait()` joins it and raises what it raised."""
        self.wait()
        if not background:
            path = self._commit_now(tmp, step)
            if on_done is not None:
                on_done(path)
            return path

        def run() -> None:
            try:
                fault_point("commit-thread", step)
                path = self._commit_now(tmp, step)
                if on_done is not None:
                    on_done(path)
            except BaseException as exc:  # handed to the caller by wait()
                self._pending_error = exc

        self._pending = threading.Thread(target=run, name=f"cloudtune-commit-{step}", daemon=False)
        self._pending.start()
        return None

    def wait(self) -> None:
        """Block until a background commit has finished; raise the error it ended with, if any (once)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.join()
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise RuntimeError(f"writing a checkpoint under {self.root} failed: {error}") from error

    def _commit_now(self, tmp: Path, step: int) -> Path:
        tmp = Path(tmp)
        if not tmp.is_dir():
            raise FileNotFoundError(f"checkpoint dir {tmp} is not there")
        existing = [c for c in list_checkpoints(self.root)
                    if c.step == step and c.path != tmp and self.problem(c) is None]
        if existing:  # already have a complete checkpoint of this step: keep it, drop this copy
            self._retire(tmp)
            return existing[-1].path
        write_manifest(tmp, step)
        (tmp / UNFINISHED_NAME).unlink(missing_ok=True)
        _fsync_path(tmp)
        self._status[tmp] = None
        self.rotate(step)
        return tmp

    def _retire(self, path: Path) -> None:
        """Delete a checkpoint so that it is never seen complete again, even if this is cut short: unfinished
        marker first, then the manifest (from here on the checkpoint is incomplete and ours), then the files."""
        _mark(path)
        (path / MANIFEST_NAME).unlink(missing_ok=True)
        _fsync_path(path)
        self._status.pop(path, None)
        shutil.rmtree(path, ignore_errors=True)

    def rotate(self, step: int | None = None) -> list[Path]:
        """Delete the oldest complete checkpoints beyond `keep`; incomplete/corrupt ones and the protected step's
        are never touched, so the newest complete one always stays. `step`: the save this rotation follows (for
        fault injection only)."""
        protected = self.protected
        complete = [c for c in list_checkpoints(self.root) if c.step != protected and self.problem(c) is None]
        removed: list[Path] = []
        for ckpt in complete[: max(0, len(complete) - self.keep)]:
            try:
                _mark(ckpt.path)
                fault_point("rotate", ckpt.step if step is None else step)
                (ckpt.path / MANIFEST_NAME).unlink(missing_ok=True)
            except OSError:
                continue
            _fsync_path(ckpt.path)
            self._status.pop(ckpt.path, None)
            shutil.rmtree(ckpt.path, ignore_errors=True)
            removed.append(ckpt.path)
        return removed


def _mark(path: Path) -> None:
    """Write the unfinished marker into `path` (durably) whatever it holds."""
    with open(path / UNFINISHED_NAME, "w", encoding="utf-8") as fh:
        fh.write("this checkpoint is being deleted\n")
        fh.flush()
        os.fsync(fh.fileno())
