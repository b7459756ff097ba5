"""Complete-or-absent checkpoints: temp dir -> manifest (sizes + sha256) written last -> atomic rename.

Layout under the checkpoint dir:

* `checkpoint-<step>` (or `checkpoint-<step>-<n>` when that name is held by a corrupt checkpoint, which is never
  deleted): a complete checkpoint, holding `cloudtune-manifest.json`.
* `.cloudtune-tmp-*`: a checkpoint being written (or being deleted); never loaded, removed on the next save.

A checkpoint is *complete* when its manifest parses and every file it lists exists with the recorded size and
sha256. Anything else is skipped with a warning, never loaded and never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MANIFEST_NAME = "cloudtune-manifest.json"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".cloudtune-tmp-"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    attempt: int  # the `-<n>` suffix; 0 for the plain name

    @property
    def order(self) -> tuple[int, int]:
        return (self.step, self.attempt)


def _sha256(path: Path, *, fsync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        if fsync:
            try:
                os.fsync(fh.fileno())
            except OSError:
                pass
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
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


def write_manifest(directory: Path, step: int) -> dict:
    """Hash every file under `directory` (fsyncing each) and write the manifest last."""
    files: dict[str, dict[str, object]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel == MANIFEST_NAME:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path, fsync=True)}
    manifest = {"format": MANIFEST_FORMAT, "step": int(step), "created": time.time(), "files": files}
    target = directory / MANIFEST_NAME
    with open(target, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(directory)
    return manifest


def verify(directory: Path) -> str | None:
    """None when `directory` is a complete checkpoint, else the reason it is not."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"manifest {MANIFEST_NAME} is missing (the checkpoint was not completed)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return "manifest lists no files"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"manifest is unreadable: {exc}"
    for rel, info in files.items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        try:
            size, expected = int(info["size"]), str(info["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"manifest entry for {rel} is malformed"
        try:
            actual_size = path.stat().st_size
            if actual_size != size:
                return f"{rel} has {actual_size} bytes, manifest says {size}"
            if _sha256(path) != expected:
                return f"{rel} does not match its sha256 in the manifest"
        except OSError as exc:  # removed while we read it (an older checkpoint being rotated out)
            return f"{rel} is unreadable: {exc}"
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


class CheckpointStore:
    """Find, write and rotate complete checkpoints in one directory.

    `warn` receives human-readable warning lines (the caller decides whether this process prints).
    Verification results are cached, so each checkpoint is hashed at most once per process.
    """

    def __init__(self, root: Path, keep: int, warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.keep = max(1, int(keep))
        self._warn = warn or (lambda _msg: None)
        self._status: dict[Path, str | None] = {}
        self._warned: set[Path] = set()

    # ----- reading -----
    def problem(self, ckpt: Checkpoint) -> str | None:
        if ckpt.path not in self._status:
            self._status[ckpt.path] = verify(ckpt.path)
        return self._status[ckpt.path]

    def latest_complete(self) -> Checkpoint | None:
        """The newest complete checkpoint; incomplete/corrupt newer ones are reported and skipped."""
        for ckpt in reversed(list_checkpoints(self.root)):
            reason = self.problem(ckpt)
            if reason is None:
                return ckpt
            self._report(ckpt, reason)
        return None

    def _report(self, ckpt: Checkpoint, reason: str) -> None:
        if ckpt.path not in self._warned:
            self._warned.add(ckpt.path)
            self._warn(f"warning: skipping incomplete or corrupt checkpoint {ckpt.path}: {reason}; it is left in place, never loaded")

    # ----- writing -----
    def temp_dir(self, step: int) -> Path:
        return self.root / f"{TMP_PREFIX}checkpoint-{step}"

    def prepare(self, step: int) -> Path:
        """Remove stale temp dirs and create a fresh one for `step` (one process per machine calls this)."""
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

    def commit(self, tmp: Path, step: int) -> Path:
        """Write the manifest, atomically publish `tmp`, then rotate. Returns the published path."""
        target = self.final_path(step)
        if target is None:  # already have a complete checkpoint of this step: keep it
            shutil.rmtree(tmp, ignore_errors=True)
            existing = [c for c in list_checkpoints(self.root) if c.step == step and self.problem(c) is None]
            return existing[-1].path
        write_manifest(tmp, step)
        os.replace(tmp, target)
        _fsync_dir(self.root)
        self._status[target] = None
        self.rotate()
        return target

    def rotate(self) -> list[Path]:
        """Delete the oldest complete checkpoints beyond `keep`; incomplete/corrupt ones are never touched."""
        complete = [c for c in list_checkpoints(self.root) if self.problem(c) is None]
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
