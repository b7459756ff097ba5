"""Content digests of local files and directories (for upload lists and content-addressed storage), and the size of
an input tree read from `stat` alone, before any byte is hashed.

Only regular files and directories are inputs. A named pipe (FIFO), a socket or a device would block the reader
(`open()` of a FIFO waits for a writer) or never end (/dev/zero): `input_tree` refuses them, and every file read here
is opened with O_NONBLOCK and checked with `fstat` before a byte is read, so nothing can block the caller.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cloudtune.errors import InvalidInput
from cloudtune.secretfiles import input_files

_CHUNK = 1 << 20
HUGE_BYTES = 1 << 30
"""An input tree this large (1 GiB) or larger is announced, with its size, before it is hashed (hashing reads every
byte: about 1-2 s per GiB from the page cache, far more from a cold disk)."""
MANY_FILES = 100_000
"""An input tree with this many files is announced too (each file costs an open and a stat)."""


def special_kind(mode: int) -> str | None:
    """The kind of a special file from its `st_mode` ("named pipe (FIFO)", "socket", ...), None for a regular file,
    a directory or a symlink."""
    for test, kind in ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return None


def _refuse_special(path: Path | str, kind: str) -> InvalidInput:
    return InvalidInput(f"{path} is a {kind}, not a regular file or directory: reading it would block or never end",
                        fix="give a regular file or a directory (write the data to a file first)")


def open_regular(path: Path | str) -> BinaryIO:
    """Open `path` for reading without ever blocking: O_NONBLOCK (a FIFO's open() would wait for a writer), then
    `fstat` on the open descriptor. Raises InvalidInput (exit 2) for anything but a regular file; OSError as open()."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refuse_special(path, kind)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: reads never wait anyway; plain blocking reads from here
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class InputTree:
    """What `stat` says of an input: total bytes of its regular files, how many there are, and its special files
    (relative paths with their kind). Symlinked files count as the files they point to; symlinked directories
    are not descended into (as `Path.rglob` does not, so this sizes exactly what `digest` hashes)."""

    path: Path
    bytes: int = 0
    files: int = 0
    special: list[tuple[str, str]] = field(default_factory=list)

    @property
    def huge(self) -> bool:
        return self.bytes >= HUGE_BYTES or self.files >= MANY_FILES


def input_tree(path: Path) -> InputTree:
    """Size `path` from `stat` alone (no file is opened). OSError as os.stat for the top path."""
    tree = InputTree(path)
    top = os.stat(path)
    if not stat.S_ISDIR(top.st_mode):
        kind = special_kind(top.st_mode)
        if kind is not None:
            tree.special.append((".", kind))
        else:
            tree.bytes, tree.files = top.st_size, 1
        return tree
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:  # a broken symlink: not a file, skipped as rglob's is_file() skips it
                continue
            if stat.S_ISREG(st.st_mode):
                tree.bytes, tree.files = tree.bytes + st.st_size, tree.files + 1
            elif not stat.S_ISDIR(st.st_mode):
                tree.special.append((os.path.relpath(full, path), special_kind(st.st_mode) or "special file"))
    return tree


def home_directories() -> set[str]:
    """This user's home and every account's home directory in the password database, and `/`."""
    homes = {os.path.expanduser("~"), "/"}
    try:
        import pwd

        homes.update(entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir not in ("", "/nonexistent"))
    except (ImportError, KeyError):  # no pwd module (Windows)
        pass
    return {os.path.realpath(h) for h in homes}


def check_input_tree(name: str, path: Path) -> str | None:
    """Refuse an input that is or holds a special file (InvalidInput naming the input, exit 2); return a warning
    for a huge input or one that is a home directory, with its size from `stat`; None otherwise."""
    tree = input_tree(path)
    if tree.special:
        rel, kind = tree.special[0]
        where = path if rel == "." else path / rel
        more = f" (and {len(tree.special) - 1} more special file(s))" if len(tree.special) > 1 else ""
        raise InvalidInput(f"inputs.{name}: {where} is a {kind}, not a regular file or directory{more}: reading it "
                           "would block the job or never end",
                           fix="give a regular file or a directory, and move pipes, sockets and devices out of it")
    home = os.path.realpath(path) in home_directories()
    if not (home or tree.huge):
        return None
    what = "a home directory" if home else "large"
    return (f"inputs.{name}: {path} is {what}: {human_bytes(tree.bytes)} in {tree.files:,} file(s); all of it is "
            "hashed to plan the job and copied or uploaded to run it. To avoid it: point the input at the folder "
            "that holds the data")


def human_bytes(n: int) -> str:
    """`n` bytes as B, KB, MB, GB or TB (powers of 1000, one decimal)."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def digest(path: Path, notice: Callable[[str], None] = _announce) -> tuple[int, str]:
    """(total bytes, sha256). A directory hashes its sorted relative paths and their file hashes: the files that
    are uploaded, without credential files (cloudtune.secretfiles.input_files).

    The tree is sized from `stat` first: a special file anywhere in it is refused (InvalidInput) before any read,
    and a huge tree is announced through `notice` (default: one line on stderr) before hashing starts."""
    tree = input_tree(path)
    if tree.special:
        rel, kind = tree.special[0]
        raise _refuse_special(path if rel == "." else path / rel, kind)
    home = os.path.realpath(path) in home_directories()
    if tree.huge or home:
        notice(f"[cloudtune] hashing {path}{' (a home directory)' if home else ''}: {human_bytes(tree.bytes)} in {tree.files:,} file(s) (sized from stat); "
               "this reads every byte")
    if not path.is_dir():
        return path.stat().st_size, file_sha256(path)
    h = hashlib.sha256()
    total = 0
    for f, rel in input_files(path)[0]:
        total += f.stat().st_size
        h.update(rel.encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return total, h.hexdigest()
