"""A full disk under a local job: name it in the job's outcome, and keep enough room to record that outcome.

When the job's file system fills up, the job's own last lines (its traceback, its failure file) may never be
written, and neither could the supervisor's state file. So the supervisor keeps `RESERVE_BYTES` of real, written
blocks in its job dir (`.cloudtune-reserve`), freed when the disk is full, and reads the cause from the lines it
still holds in memory (cloudtune.kit.triage: ENOSPC, EFBIG under a file-size limit, EDQUOT, PyTorch's
inline_container.cc write failure). The outcome is one line: "disk full on <mount point>, N bytes free ...;
to fix: ...".
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
from pathlib import Path

RESERVE_NAME = ".cloudtune-reserve"
RESERVE_BYTES = 256 * 1024  # room for the state file, the last log lines and the job store's WAL page or two
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def reserve(job_dir: Path) -> bool:
    """Write the reserve file (zeros, so its blocks are allocated: a sparse file reserves nothing). False when it
    cannot be written (the disk is already full)."""
    path = job_dir / RESERVE_NAME
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
        return True
    except OSError:
        path.unlink(missing_ok=True)
        return False


def release(job_dir: Path) -> None:
    """Free the reserve: the writes that record the outcome get its room."""
    (job_dir / RESERVE_NAME).unlink(missing_ok=True)


def is_full(exc: BaseException) -> bool:
    """Whether an OSError says the disk (or the file-size limit, or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds `path` (which may not exist yet: its nearest parent is used)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def file_size_limit() -> int | None:
    """This process's RLIMIT_FSIZE in bytes (`ulimit -f`, inherited by the job's processes); None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def describe_full(job_dir: Path, evidence: str, fix: str) -> str:
    """The outcome of a job that filled its disk: "disk full on <mount>, N bytes free (<evidence>); to fix: <fix>";
    when a file-size limit is set and the disk still has more room than it, the limit is what was reached:
    "file-size limit (ulimit -f) of L bytes reached on <mount>, N bytes free (...)"."""
    where = mount_point(job_dir)
    try:
        free_bytes: int | None = shutil.disk_usage(where).free
    except OSError:
        free_bytes = None
    free = f"{free_bytes} bytes free" if free_bytes is not None else "free space unknown"
    limit = file_size_limit()
    if limit is not None and (free_bytes is None or free_bytes > limit):
        return f"file-size limit (ulimit -f) of {limit} bytes reached on {where}, {free} ({evidence}); to fix: {fix}"
    return f"disk full on {where}, {free} ({evidence}); to fix: {fix}"
