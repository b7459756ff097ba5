"""A stopped job exits within a bound: from SIGTERM to exit, at most `stop_deadline()` seconds, always.

The clouds give a stopped job a short notice before they kill it: a SageMaker managed spot interruption and an EC2
spot reclaim give two minutes; the local supervisor's grace period is 30 s (`CLOUDTUNE_STOP_GRACE_S`). On SIGTERM the
recipe finishes its optimizer step, saves a checkpoint and exits 143 (class preempted: the job resumes from it). Two
things could make that exit late or never happen, and each has a bound here:

* a save, a collective or a mount that hangs (a rank that died mid-collective leaves the others in gloo's 30-minute
  timeout): `arm()` starts a watchdog when SIGTERM arrives; at the deadline it says so in one line, leaves the exit
  code where torchrun's parent reads it and ends the process with `os._exit(143)`. The checkpoint being written is
  then incomplete and never loaded (cloudtune.train.checkpoints): the job resumes from the one before.
* interpreter teardown after the final save (torch.distributed's process group and gloo's threads, non-daemon
  threads, atexit handlers): after a stop, `close_process_group` gives the group TEARDOWN_S and `exit_now` ends the
  process without the teardown.

The bound, stated: exit <= min(stop_deadline(), time to the end of the current optimizer step + save time +
TEARDOWN_S) after SIGTERM; stop_deadline() defaults to STOP_DEADLINE_S = 100 s (inside a two-minute spot notice,
with room for the node's own exit), `CLOUDTUNE_STOP_DEADLINE_S` overrides it. `cloudtune-run`'s parent process (the
one that started torchrun or a user's command) kills its child STOP_MARGIN_S after that deadline if it still runs.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

STOP_DEADLINE_VAR = "CLOUDTUNE_STOP_DEADLINE_S"
STOP_DEADLINE_S = 100.0
TEARDOWN_S = 10.0  # what the process group gets to shut down after a stop
STOP_MARGIN_S = 15.0  # how much longer the parent waits for its child than the child's own deadline
EXIT_DIR_VAR = "CLOUDTUNE_EXIT_DIR"  # set for torchrun's workers: each failed worker writes its exit code there
LOG = "[cloudtune]"

# not an `error:` line: the cause of this exit is the stop (class preempted, retried), not the job's input
DEADLINE_LINE = ("stop deadline: SIGTERM received {seconds:.0f} s ago and this process has not exited (a save or a "
                 "collective did not finish): exiting now; the job resumes from the newest complete checkpoint "
                 "(" + STOP_DEADLINE_VAR + " sets this bound)")
_state: dict[str, object] = {}
_lock = threading.Lock()


def stop_deadline(environ: dict[str, str] | None = None) -> float:
    """Seconds from SIGTERM to a forced exit (CLOUDTUNE_STOP_DEADLINE_S, default STOP_DEADLINE_S; at least 1)."""
    env = os.environ if environ is None else environ
    try:
        return max(1.0, float(env.get(STOP_DEADLINE_VAR, STOP_DEADLINE_S)))
    except ValueError:
        return STOP_DEADLINE_S


def stop_requested() -> bool:
    """True once `arm` ran in this process (a SIGTERM arrived)."""
    return "armed" in _state


def report_worker_exit(code: int) -> None:
    """Under torchrun: leave this worker's exit code where the node's `cloudtune-run` reads it."""
    exit_dir = os.environ.get(EXIT_DIR_VAR)
    if exit_dir and code != 0 and Path(exit_dir).is_dir():
        rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
        (Path(exit_dir) / f"rank-{rank}").write_text(str(code))


def first_to_report(kind: str) -> bool:
    """Whether this process says a failure that every rank meets alike (`kind`: "input", "diverged"): under
    torchrun, the first of the node's workers to create `<exit dir>/reported-<kind>` (O_EXCL), so the line is
    printed once whichever rank gets there first: a rank that exits first makes torchrun stop the others, rank 0
    included, before they could print. Without the exit dir: rank 0 (RANK, default 0)."""
    exit_dir = os.environ.get(EXIT_DIR_VAR)
    if not exit_dir or not Path(exit_dir).is_dir():
        return int(os.environ.get("RANK", "0")) == 0
    try:
        os.close(os.open(Path(exit_dir) / f"reported-{kind}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return int(os.environ.get("RANK", "0")) == 0
    return True


def exit_now(code: int) -> None:
    """End this process with `code` at once: output flushed, the exit code reported, no interpreter teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        report_worker_exit(code)
    except OSError:
        pass
    os._exit(code)


def arm(code: int, deadline: float | None = None) -> None:
    """Start the stop watchdog (once per process until `disarm`): `deadline` seconds from now (default
    stop_deadline()) it prints one line and calls exit_now(code). Safe to call from a signal handler."""
    with _lock:
        if "armed" in _state:
            return
        cancelled = threading.Event()
        _state.update(armed=True, cancelled=cancelled)
    seconds = stop_deadline() if deadline is None else deadline

    def watchdog() -> None:
        if cancelled.wait(seconds):
            return
        print(f"{LOG} {DEADLINE_LINE.format(seconds=seconds)}", flush=True)
        exit_now(code)

    threading.Thread(target=watchdog, name="cloudtune-stop-deadline", daemon=True).start()


def disarm() -> None:
    """Cancel the watchdog (a process that goes on after its stop path, as a test that runs a recipe in-process)."""
    with _lock:
        cancelled = _state.pop("cancelled", None)
        _state.pop("armed", None)
    if isinstance(cancelled, threading.Event):
        cancelled.set()


def close_process_group(timeout: float = TEARDOWN_S) -> bool:
    """Destroy torch.distributed's default process group, if one is up, giving it `timeout` seconds (in a daemon
    thread: a peer that is gone can block it for gloo's whole timeout). True when it finished in time."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return True
    done = threading.Event()

    def destroy() -> None:
        try:
            dist.destroy_process_group()
        finally:
            done.set()

    threading.Thread(target=destroy, name="cloudtune-destroy-pg", daemon=True).start()
    return done.wait(timeout)
