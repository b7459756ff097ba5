"""The CLI's last line of defence: what an exception that reached a command means for the user, and how the process
ends (app layer; read by cloudtune.cli).

Exit codes (as cloudtune.cli states): 0 success, 2 invalid input (the user's situation: a path that cannot be read,
text that is not UTF-8, input nested or sized past what can be read), 1 a failed job or cloudtune's own bug (then,
and only then, "report it"), 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 141 output into a closed pipe (the shell's
128 + signal number, as a Unix tool killed by that signal reports).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import NoReturn
from cloudtune.errors import JobInputError

SIGPIPE_EXIT = 128 + getattr(signal, "SIGPIPE", 13)


def stream_broken(stream: object) -> bool:
    """Whether `stream` (sys.stdout or sys.stderr) is a pipe whose reader has gone: poll() reports POLLERR on the
    write end of such a pipe (Linux, macOS). False where it cannot be told."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        import select

        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError, ImportError):
        return False


def quiet_pipe_exit() -> NoReturn:
    """End the process quietly after its output pipe closed (`cloudtune list | head -1`), as a Unix tool does: no
    message, exit 141. Python would otherwise print "Exception ignored ... BrokenPipeError" when it flushes stdout at
    exit, so stdout is pointed at /dev/null first (the recipe of Python's signal module documentation)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(SIGPIPE_EXIT)  # nothing is left to flush: both streams now lead nowhere


def user_error(exc: BaseException) -> tuple[str, str] | None:
    """(message, fix) for an exception that comes from the user's input or situation rather than from a bug in
    cloudtune, None otherwise. `exc` reached the CLI's last-resort handler, after the cloud SDKs' own translation."""
    if isinstance(exc, JobInputError):  # raised by the checks the job itself runs, run early on this machine
        return str(exc), ""  # its message names the field and says what to change
    if isinstance(exc, RecursionError):
        return ("the input is nested too deeply to read (a data record or a JSON file with thousands of levels of "
                "brackets)", "flatten the record; a job's data nests a few levels")
    if isinstance(exc, MemoryError):
        return ("this machine ran out of memory reading the input", "give smaller inputs (split the file), or run "
                                                                   "it where there is more memory")
    if isinstance(exc, UnicodeError):
        where = f" in {exc.object[:60]!r}" if isinstance(getattr(exc, "object", None), str) else ""
        return (f"text that is not valid UTF-8{where}: {exc.reason if hasattr(exc, 'reason') else exc}",
                "save the file as UTF-8, and use file names that are valid UTF-8")
    if isinstance(exc, OSError) and not _network(exc):
        return _os_error(exc)
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return ("a number in the input has more than "
                f"{sys.get_int_max_str_digits():,} digits", "give a number of a sensible size, or quote it as text")
    return None


def _network(exc: OSError) -> bool:
    """A socket-level failure (a reset, a refused or timed-out connection): the cloud or the network, not a path."""
    import socket

    return isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)) or \
        type(exc).__module__.split(".")[0] in ("requests", "urllib3", "botocore", "google", "azure", "httpx")


_FIX = {
    errno.EACCES: "give yourself read (and, for outputs, write) permission, or use a path you own",
    errno.EPERM: "give yourself permission, or use a path you own",
    errno.ENOENT: "check the path (relative paths resolve against the spec file's directory)",
    errno.EISDIR: "give a file, not a directory",
    errno.EEXIST: "a file stands where a directory must be created (CLOUDTUNE_HOME or a path in the spec): move it, "
                  "or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ELOOP: "the path is a loop of symlinks: point it at the real file",
    errno.ENOSPC: "free some disk space (`cloudtune clean` removes finished local jobs' copies), then run it again",
    errno.EROFS: "use a path on a writable file system",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or give fewer files",
    errno.EIO: "the disk reported an I/O error: check the device, or copy the data elsewhere",
}


def _os_error(exc: OSError) -> tuple[str, str]:
    path = exc.filename if exc.filename is not None else None
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f"{os.fsdecode(path)!r}: " if path is not None else ""
    extra = f" -> {os.fsdecode(exc.filename2)!r}" if getattr(exc, "filename2", None) else ""
    fix = _FIX.get(exc.errno or 0, "check the path and that this machine can read it")
    return f"cannot use {where.rstrip(': ')}{extra}: {what}" if path is not None else f"{what}", fix


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received while the CLI follows a job: handled as Ctrl-C is (a local job is cancelled), and
    the exit status is the shell's 128 + the signal's number (143, 129) rather than Ctrl-C's 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    return exc.exit_code if isinstance(exc, Terminated) else 130


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


class StopSignals:
    """While in this block (main thread only): Ctrl-C (SIGINT) raises KeyboardInterrupt even when the process
    started with SIGINT ignored (a background job of a script, `nohup`, CI), and SIGTERM (a CI step's timeout,
    `kill`) and SIGHUP (the terminal closed) raise `Terminated`, so the three stop a followed local job alike.
    The previous handlers are restored on exit."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __enter__(self) -> StopSignals:
        import threading

        self.saved: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        self.saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in self.SIGNALS:
            self.saved[signum] = signal.signal(signum, _raise_terminated)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def restore_ctrl_c() -> None:
    """Make Ctrl-C raise KeyboardInterrupt even when this process started with SIGINT ignored (a background job
    of a non-interactive shell, `bash script &`): the CLI's one-line "interrupted" (exit 130) and the cancel of a
    followed local job rely on it. Main thread only; a handler someone installed is left alone."""
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def quiet_sdk_loggers() -> None:
    """Hold back the cloud SDKs' own warnings, which Python's last-resort logging handler would print before
    cloudtune's one line: azure-identity logs every credential DefaultAzureCredential tried (about 15 lines) when
    none works, and the launcher's error already says what to do. `CLOUDTUNE_DEBUG=1` keeps them."""
    if os.environ.get("CLOUDTUNE_DEBUG"):
        return
    import logging

    logging.getLogger("azure").setLevel(logging.ERROR)
