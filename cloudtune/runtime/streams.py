"""Whole lines on a node's shared output.

Every process of a node writes to one stream: the container's stdout and stderr, which the cloud's log agent
reads (CloudWatch on SageMaker, Cloud Logging on Vertex AI, the job's `user_logs/std_log.txt` on Azure ML), or the
local supervisor's pipe. A line written in pieces can be cut by another process's line, which garbles both. Python
writes in pieces under PYTHONUNBUFFERED=1, which the clouds' images and the local supervisor set: `print(a, b)`
makes one write(2) for each argument, separator and end. A garbled line is lost to a reader, `cloudtune status`
and the step lines it parses included.

A write(2) of at most PIPE_BUF bytes (4096 on Linux) to a pipe is atomic (POSIX), and a write to a file opened
with O_APPEND is made at its end in one piece on Linux's local file systems. So:
- `whole_lines()` makes this process's own stdout and stderr line-buffered: each line leaves in one write, and it
  still leaves as soon as it ends (nothing waits for a block to fill);
- `relay()` copies a child's output one line per write, for a child whose buffering is not ours (a user's
  command, under torchrun, beside its node's other ranks).
Lines over PIPE_BUF, and output written below Python (C's stdio in a native library), can still be cut.
"""

from __future__ import annotations

import io
import os
import select
import sys
import threading
from typing import IO

PIPE_BUF = 4096  # Linux's: the most bytes one write(2) to a pipe puts there without interleaving


def whole_lines() -> None:
    """Make sys.stdout and sys.stderr line-buffered text streams that write each line in one write(2).

    Only the process's own streams are changed: one replaced by a harness (pytest's capture) or that cannot be
    reconfigured is left as it is. A line without its end waits for it (or for a flush: print(..., flush=True),
    exit, `cloudtune.runtime.stopping.exit_now`)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not sys.__stdout__ and stream is not sys.__stderr__:
            continue
        try:
            stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
        except (AttributeError, ValueError, io.UnsupportedOperation):
            continue


def split_lines(pending: bytes, final: bool = False) -> tuple[list[bytes], bytes]:
    """(the complete lines of `pending`, each with its end; what is left after the last end).

    A line ends at "\n", "\r\n" or "\r"; a "\r" that is the last byte waits for the next one (it may be a "\r\n"
    cut by the read) unless `final`. A line longer than PIPE_BUF is cut into PIPE_BUF-byte pieces, as no single
    write could keep it whole anyway."""
    lines: list[bytes] = []
    start = 0
    while start < len(pending):
        ends = [i for i in (pending.find(b"\n", start, start + PIPE_BUF), pending.find(b"\r", start, start + PIPE_BUF))
                if i >= 0]
        if ends:
            cut = min(ends) + 1
            if cut == len(pending) and pending.endswith(b"\r") and not final:
                break
            cut += pending[cut - 1:cut + 1] == b"\r\n"
        elif len(pending) - start >= PIPE_BUF:
            cut = start + PIPE_BUF
        else:
            break
        lines.append(pending[start:cut])
        start = cut
    return lines, pending[start:]


def write_all(fd: int, data: bytes) -> bool:
    """Write `data` to `fd`; False when `fd` is gone (its reader closed it), after which nothing more is written."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:  # a non-blocking descriptor (shared with a process that set O_NONBLOCK): wait
            select.select([], [fd], [], 1.0)
        except OSError:  # EPIPE, EBADF: the reader is gone
            return False
    return True


def relay(source: IO[bytes], fd: int) -> None:
    """Copy `source` to the file descriptor `fd` until end of file, each line in one write(2).

    Bytes after the last line end wait for the line's end, for PIPE_BUF bytes, or for end of file. Once `fd` fails,
    the rest of `source` is read and dropped, so that its writer never blocks on a full pipe. Closes `source`."""
    pending, open_ = b"", True
    with source:
        while chunk := os.read(source.fileno(), 65536):
            if not open_:
                continue
            lines, pending = split_lines(pending + chunk)
            for line in lines:
                open_ = open_ and write_all(fd, line)
        lines, rest = split_lines(pending, final=True)
        for line in [*lines, rest] if rest else lines:
            open_ = open_ and write_all(fd, line)


def start_relays(stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> list[threading.Thread]:
    """Relay a child's piped stdout and stderr to this process's (file descriptors 1 and 2), one thread each."""
    threads = []
    for source, fd in ((stdout, 1), (stderr, 2)):
        if source is not None:
            try:  # what this process wrote first stays first
                sys.stdout.flush() if fd == 1 else sys.stderr.flush()
            except (OSError, ValueError):
                pass  # its reader is gone: the relay drops the child's output, and the child still runs to its end
            t = threading.Thread(target=relay, args=(source, fd), name=f"cloudtune-relay-{fd}", daemon=True)
            t.start()
            threads.append(t)
    return threads
