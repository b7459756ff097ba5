"""Copies of a job's inputs that cost no disk where the file system can share blocks.

Each local job gets its own copy of its inputs and model, as each cloud container does. A copy is a
copy-on-write clone where the file system supports one (FICLONE on btrfs, XFS, bcachefs, ...; copy_file_range
shares extents there too), else an in-kernel copy, else a plain one. It is never a hard link or a symlink: a
job that writes into its input changes its own copy, never the user's file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from cloudtune.hashing import open_regular
from cloudtune.secretfiles import input_files

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_NOT_SUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.EPERM}


@dataclass
class CopyStats:
    """What `copy_tree` did: files cloned (blocks shared with the source) or copied, and their bytes."""

    cloned_files: int = 0
    cloned_bytes: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    methods: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (f"{self.cloned_files} file(s), {self.cloned_bytes} bytes cloned copy-on-write; "
                f"{self.copied_files} file(s), {self.copied_bytes} bytes copied")


def _ficlone(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError as exc:
        if exc.errno in _NOT_SUPPORTED:
            return False
        raise


def _copy_range(src_fd: int, dst_fd: int, size: int) -> bool:
    """In-kernel copy (shares extents on file systems that can); False where copy_file_range is unavailable."""
    if not hasattr(os, "copy_file_range"):
        return False
    done = 0
    try:
        while done < size:  # each call moves at least one byte until EOF
            n = os.copy_file_range(src_fd, dst_fd, size - done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno in _NOT_SUPPORTED and done == 0:
            return False
        raise
    return True


def clone_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], stats: CopyStats | None = None) -> str:
    """Copy one file's data and metadata to `dst` (replacing it); returns how: "clone", "copy_file_range" or "copy"."""
    stats = stats if stats is not None else CopyStats()
    with open_regular(src) as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        if _ficlone(fin.fileno(), fout.fileno()):
            method = "clone"
        elif _copy_range(fin.fileno(), fout.fileno(), size):
            method = "copy_file_range"
        else:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            method = "copy"
    shutil.copystat(src, dst)
    if method == "clone":
        stats.cloned_files, stats.cloned_bytes = stats.cloned_files + 1, stats.cloned_bytes + size
    else:
        stats.copied_files, stats.copied_bytes = stats.copied_files + 1, stats.copied_bytes + size
    stats.methods.add(method)
    return method


def copy_tree(src: Path, dest_dir: Path, stats: CopyStats | None = None, *, uploaded_only: bool = False) -> CopyStats:
    """Copy a file into `dest_dir` under its own name, or a directory's contents into `dest_dir`.

    Symlinks inside a directory are copied as the files they point to, so the copy holds no link to the user's files.
    `uploaded_only`: a directory's files as a cloud job would get them when uploaded, without credential files
    (cloudtune.secretfiles.input_files)."""
    stats = stats if stats is not None else CopyStats()
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and uploaded_only:
        for path, rel in input_files(src)[0]:
            (dest_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            clone_file(path, dest_dir / rel, stats)
    elif src.is_dir():
        shutil.copytree(src, dest_dir, dirs_exist_ok=True, symlinks=False,
                        copy_function=lambda s, d: clone_file(s, d, stats))
    else:
        clone_file(src, dest_dir / src.name, stats)
    return stats
