"""A local job's supervisor is started once, and a launch that died before starting it is told apart from a job
that is starting.

The job's `supervisor.lock` (flock(2)) is held by whoever is starting or running the job, without a gap: `submit`
takes it before it writes the pending state, and hands it to the supervisor it starts (an inherited descriptor
shares the lock), which keeps it for its life. So a pending state that no supervisor has recorded itself in
(`supervisor_pid`) and whose lock is free was left by a launch that died before starting the supervisor: nothing
runs the job, and nothing will. `outcome` says so, and marks the state failed under the lock; a later `submit` of
the same plan (a resumed sweep) starts it then. A supervisor runs the job only while the state still waits for one
(`claim`), so no job runs twice.

States written before this protocol (no `launcher_pid`) count as started; the launcher's start-up grace applies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from cloudtune.local.statefile import read_state, write_state
from cloudtune.states import JobState

LOCK_NAME = "supervisor.lock"
NEVER_STARTED = "the launch ended before it started the job's supervisor: nothing ran"
SUPERVISOR_DIED = "the job's supervisor exited before it started the job (see supervisor.log in the job directory)"
ABANDONED = "abandoned"  # the state's key that marks a launch that died before starting the supervisor
Outcome = Literal["absent", "started", "abandoned"]


def _open_lock(job_dir: Path) -> int:
    return os.open(job_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock(fd: int) -> bool:
    """Lock `fd` exclusively if no other open file holds the lock (a no-op on the open file that holds it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def locked(job_dir: Path) -> Iterator[int | None]:
    """Hold the job's lock for the block when no one else holds it: yields the locked descriptor, or None. The lock
    ends with the block unless the descriptor was handed to a child process (`pass_fds`), which then holds it."""
    fd = _open_lock(job_dir)
    try:
        yield fd if _try_lock(fd) else None
    finally:
        os.close(fd)


def launch_fields() -> dict[str, Any]:
    """What `submit` records in the pending state: the launching process (for the reader), and that the lock
    protocol applies."""
    return {"launcher_pid": os.getpid()}


def waiting_for_supervisor(state: dict[str, Any]) -> bool:
    """A pending state that no supervisor has recorded itself in, and no one has found abandoned."""
    return (state.get("state", JobState.PENDING) == JobState.PENDING and "supervisor_pid" not in state
            and not state.get(ABANDONED))


def restartable(state: dict[str, Any]) -> bool:
    """For `submit`, holding the lock: a state left by a launch that died before starting the supervisor (found
    abandoned, or still pending with no supervisor recorded: no one else holds the lock)."""
    return bool(state.get(ABANDONED)) or waiting_for_supervisor(state)


def outcome(job_dir: Path) -> Outcome:
    """Whether the job in `job_dir` was submitted and started ("started": being started, running or ended), was
    left by a launch that died before starting its supervisor ("abandoned": the state is then marked failed, with
    NEVER_STARTED), or was never submitted ("absent")."""
    state = read_state(job_dir)
    if not state:
        return "absent"
    if state.get(ABANDONED):
        return "abandoned"
    if not waiting_for_supervisor(state) or "launcher_pid" not in state:
        return "started"
    with locked(job_dir) as fd:
        if fd is None:  # a launch or its supervisor holds it: the job is starting
            return "started"
        state = read_state(job_dir)
        if not waiting_for_supervisor(state):  # it started and ended between the two reads
            return "started"
        reason = SUPERVISOR_DIED if "claimed_by" in state else NEVER_STARTED
        write_state(job_dir, state=JobState.FAILED.value, failure_reason=reason, **{ABANDONED: True})
        return "abandoned"


def claim(job_dir: Path, inherited: int | None) -> int | None:
    """For the supervisor, before it records itself: the descriptor of the job's lock, held from now on (`inherited`
    from `submit`, or taken here when the supervisor was started by hand), when this process is to run the job;
    None (and nothing held) when another holds the lock or the state no longer waits for a supervisor. The claim is
    recorded (`claimed_by`), so that a supervisor that dies before it records itself is told from a launch that
    never started one."""
    fd = inherited if inherited is not None and _is_the_lock(job_dir, inherited) else _open_lock(job_dir)
    if not _try_lock(fd) or not waiting_for_supervisor(read_state(job_dir)):
        os.close(fd)
        return None
    os.set_inheritable(fd, False)  # the job's processes must not keep the lock past the supervisor
    write_state(job_dir, claimed_by=os.getpid())
    return fd


def _is_the_lock(job_dir: Path, fd: int) -> bool:
    """Whether descriptor `fd` is open on the job's lock file (the same file, not another or a closed descriptor)."""
    try:
        mine, theirs = os.fstat(fd), os.stat(job_dir / LOCK_NAME)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
