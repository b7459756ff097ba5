"""Content digests of local files and directories (for upload lists and content-addressed storage)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: Path) -> tuple[int, str]:
    """(total bytes, sha256). A directory hashes its sorted relative paths and their file hashes: the files that
    are uploaded, without credential files (cloudtune.secretfiles.input_files)."""
    if path.is_file():
        return path.stat().st_size, file_sha256(path)
    from cloudtune.secretfiles import input_files

    h = hashlib.sha256()
    total = 0
    for f, rel in input_files(path)[0]:
        total += f.stat().st_size
        h.update(rel.encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return total, h.hexdigest()
