"""Unpacking a tar(.gz) archive safely: what both a download (`cloudtune download`, `cloudtune.kit.download`) and a
job reading another job's model.tar.gz (`cloudtune.runtime.modelarchive`) use. Stdlib only."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from cloudtune.errors import InvalidInput


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Unpack the tar(.gz) `archive` into the directory `dest`; returns the files written (relative, sorted).

    Every member is checked before anything is written: only regular files and directories are accepted (a
    symbolic or hard link, a device or a FIFO is refused), and no member may leave `dest` (an absolute name or a
    `..` part). A refused or unreadable archive: InvalidInput naming the member, and nothing is unpacked."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"{archive.name} cannot be unpacked: {exc}", fix="download it again; if it fails again, "
                           "the archive is damaged at its source") from None
    return sorted(PurePosixPath(*[p for p in PurePosixPath(m.name).parts if p != "."]).as_posix()
                  for m in members if m.isfile())


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a regular file"
        raise InvalidInput(f"{archive.name}: member {name!r} is {kind}; only files and folders are unpacked",
                           fix="the archive was not written by a training job; unpack it yourself if you trust it")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise InvalidInput(f"{archive.name}: member {name!r} would be written outside the target directory",
                           fix="the archive was not written by a training job; do not unpack it")
