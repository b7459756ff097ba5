"""Complete-or-absent checkpoints: temp dir -> fsync -> manifest (sizes + chunk sha256) written last -> atomic rename.

Layout under the checkpoint dir:

* `checkpoint-<step>` (or `checkpoint-<step>-<n>` when that name is held by a corrupt checkpoint, which is never
  deleted): a complete checkpoint, holding `cloudtune-manifest.json`.
* `.cloudtune-tmp-*`: a checkpoint being written (or being deleted); never loaded, removed on the next save.

A checkpoint is *complete* when its manifest parses and every file it lists exists with the recorded size and
sha256 (of each `chunk_bytes` piece; manifests of format 1 hold one sha256 per file and still verify). Anything else
is skipped with a warning, never loaded and never deleted.

Where the cost goes, and why it is small:

* Complete-or-absent comes from the rename: every file is fsynced, then the manifest is written and fsynced, then
  the temp dir is renamed and the parent fsynced. A crash at any point leaves either no checkpoint or a whole one.
* Sizes catch a truncated copy (a partial S3 restore, a cut-off upload through a GCS/blob fuse mount); the chunk
  hashes also catch same-size damage (a bit flip, a stale file of another attempt). Chunks are hashed in parallel
  threads (hashlib and file reads release the GIL) while the fsyncs run.
* `commit(..., background=True)` runs all of that in one thread on the writing process while training goes on. The
  rename still waits for the fsyncs, so a crash guarantee is unchanged; what moves off the critical path is only the
  time until the checkpoint appears. The next `prepare`/`commit`/`latest_complete` and `wait()` join it first.
* On resume under torch.distributed (gloo/nccl), rank 0 verifies in full and broadcasts its choice; the other
  ranks check only that checkpoint's manifest and sizes (a stat per file), so the bytes are hashed once, not once
  per rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MANIFEST_NAME = "cloudtune-manifest.json"
MANIFEST_FORMAT = 2
TMP_PREFIX = ".cloudtune-tmp-"
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
    last, and fsync the directory. After this returns, renaming `directory` publishes a complete checkpoint."""
    sizes = {
        path.relative_to(directory).as_posix(): path.stat().st_size
        for path in sorted(p for p in directory.rglob("*") if p.is_file())
        if path.relative_to(directory).as_posix() != MANIFEST_NAME
    }
    digests = _digests(directory, {rel: _pieces(size, chunk_bytes) for rel, size in sizes.items()}, fsync=True)
    for sub in {p.parent for p in directory.rglob("*") if p.is_file()} - {directory}:
        _fsync_path(sub)
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
    def temp_dir(self, step: int) -> Path:
        return self.root / f"{TMP_PREFIX}checkpoint-{step}"

    def prepare(self, step: int) -> Path:
        """Wait for a running commit, remove stale temp dirs and create a fresh one for `step` (one process per
        checkpoint dir calls this)."""
        self.wait()
        self.root.mkdir(parents=True, exist_ok=True)
        for child in self.root.iterdir():
            if child.name.startswith(TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        tmp = self.temp_dir(step)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def final_path(self, step: int) -> Path | None:
        """Where step `step` goes; None when a complete checkpoint of that step already exists."""
        attempt = 0
        while True:
            name = f"checkpoint-{step}" + (f"-{attempt}" if attempt else "")
            path = self.root / name
            if not path.exists():
                return path
            if self.problem(Checkpoint(path, step, attempt)) is None:
                return None
            attempt += 1

    def commit(self, tmp: Path, step: int, background: bool = False,
               on_done: Callable[[Path], None] | None = None) -> Path | None:
        """Write the manifest, atomically publish `tmp`, then rotate; `on_done(path)` is called once published.

        Returns the published path; with `background`, returns None at once and does the work in a thread (the
        files in `tmp` must not change any more); `wait()` joins it and raises what it raised."""
        self.wait()
        if not background:
            path = self._commit_now(tmp, step)
            if on_done is not None:
                on_done(path)
            return path

        def run() -> None:
            try:
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
        target = self.final_path(step)
        if target is None:  # already have a complete checkpoint of this step: keep it
            shutil.rmtree(tmp, ignore_errors=True)
            existing = [c for c in list_checkpoints(self.root) if c.step == step and self.problem(c) is None]
            return existing[-1].path
        write_manifest(tmp, step)
        os.replace(tmp, target)
        _fsync_path(self.root)
        self._status[target] = None
        self.rotate()
        return target

    def rotate(self) -> list[Path]:
        """Delete the oldest complete checkpoints beyond `keep`; incomplete/corrupt ones and the protected step's
        are never touched."""
        protected = self.protected
        complete = [c for c in list_checkpoints(self.root) if c.step != protected and self.problem(c) is None]
        removed: list[Path] = []
        for ckpt in complete[: max(0, len(complete) - self.keep)]:
            doomed = self.root / f"{TMP_PREFIX}delete-{ckpt.path.name}"
            try:
                os.replace(ckpt.path, doomed)  # atomic: the checkpoint vanishes whole
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            self._status.pop(ckpt.path, None)
            removed.append(ckpt.path)
        return removed
