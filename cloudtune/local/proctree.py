"""The process tree of a local job: find every process it started, and end them all.

The supervisor makes itself the child subreaper (Linux `prctl(PR_SET_CHILD_SUBREAPER)`), so a process whose
parent died, even one that left the node's process group with `setsid`, is re-parented to the supervisor
instead of to init: every process of the job stays a descendant of the supervisor, and `descendants()` finds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants. Returns False where the OS has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, or None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process; empty where there is no /proc (then only groups are signalled)."""
    table: dict[int, tuple[int, str]] = {}
    if not PROC.is_dir():
        return table
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = st
    return table


def descendants(root: int | None = None) -> dict[int, str]:
    """Every process below `root` (default: this process) -> its state letter ('Z' for a zombie)."""
    root = os.getpid() if root is None else root
    table = _parents()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:  # a tree: each pid is visited once
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(keep: set[int]) -> None:
    """Collect the exit status of this process' zombie children, except those in `keep` (a Popen reaps its own)."""
    for pid, state in descendants().items():
        if state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def kill_all(keep: set[int], timeout: float) -> list[int]:
    """SIGKILL every descendant until none runs (or `timeout` passes); reap the orphans among them.

    `keep`: children whose status a Popen will collect (they are killed, not reaped). Returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        running = [pid for pid, state in descendants().items() if state != "Z"]
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        reap(keep)
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def _session_and_start(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, session id, start time in epoch seconds) of a process, from /proc/PID/stat (proc(5): fields 4,
    6 and 22, the last in clock ticks since boot); None once it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()
        boot = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return int(fields[1]), int(fields[3]), boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _job_sessions(job_dir: Path) -> tuple[set[int], float]:
    """The sessions a job's processes run in (its state.json: `sessions`, the supervisor's and each node's, each
    started with a new session) and when the job started (epoch seconds; 0 when unknown)."""
    try:
        state = json.loads((job_dir / "state.json").read_text())
    except (OSError, ValueError):
        return set(), 0.0
    sessions = {int(s) for s in state.get("sessions") or [] if str(s).isdigit()}
    if str(state.get("supervisor_pid", "")).isdigit():
        sessions.add(int(state["supervisor_pid"]))
    return sessions, float(state.get("started_at") or 0.0)


def job_processes(job_dir: Path) -> list[int]:
    """The processes of a local job found without its supervisor: those in one of the job's sessions (a child
    cannot leave its session but by `setsid`, and keeps it through `env -i` and `cd`), those that work in `job_dir`
    or whose contract (CLOUDTUNE_FS_ROOT) points into it, and every descendant of those (one that called `setsid`
    while its parent lived). A process started before the job is never one of its own (a reused pid)."""
    roots = {str(job_dir.absolute()), str(job_dir.resolve())}
    markers = [f"CLOUDTUNE_FS_ROOT={root}/".encode() for root in roots]
    sessions, started = _job_sessions(job_dir)
    if not PROC.is_dir():
        return []
    table: dict[int, tuple[int, int, float]] = {}
    found: set[int] = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        info = _session_and_start(pid)
        if info is None or info[2] < started - 1.0 or not alive(pid):
            continue
        table[pid] = info
        if info[1] in sessions:
            found.add(pid)
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(cwd == root or cwd.startswith(root + os.sep) for root in roots) or any(m in environ for m in markers):
            found.add(pid)
    grew = True
    while grew:  # the descendants of what was found: bounded by the process table
        new = {pid for pid, (ppid, _, _) in table.items() if ppid in found and pid not in found}
        found |= new
        grew = bool(new)
    return sorted(found)
