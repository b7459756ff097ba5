"""In the container: a model delivered as an archive (a SageMaker channel holding another job's model.tar.gz) is
unpacked once per machine before the recipe loads it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from cloudtune.data.archives import safe_extract
from cloudtune.data.savedmodel import ARCHIVE_LOCK, find_saved_model, model_archive
from cloudtune.errors import InvalidInput, JobInputError


def unpacked_model_archive(path: Path) -> Path | None:
    """The saved model inside the archive of `model_archive(path)`, unpacked once per machine (None when there is
    no archive, or no saved model in it).

    It is unpacked with `cloudtune.data.archives.safe_extract` (links and paths that leave the directory refused) into
    `<path>/<name without .tar.gz>/` (a temp directory when `path` is read-only), under a lock so that the processes
    of one node unpack it once, and renamed into place when complete: a process that finds it there reuses it.
    Raises JobInputError for an archive that cannot be unpacked safely."""
    archive = model_archive(path)
    if archive is None:
        return None
    root = path if os.access(path, os.W_OK) else Path(tempfile.gettempdir()) / (
        "cloudtune-model-" + hashlib.sha256(str(archive).encode()).hexdigest()[:16])
    root.mkdir(parents=True, exist_ok=True)
    final = root / archive.name[: -len(".tar.gz")]
    with open(root / ARCHIVE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=root))
            try:  # one level down: a partial copy left by a killed process is never taken for the model
                safe_extract(archive, partial / "content")
                os.replace(partial / "content", final)
            except InvalidInput as exc:
                raise JobInputError(f"train.model: {exc.message}") from None
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return find_saved_model(final)
