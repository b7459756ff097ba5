"""Kill a training run at a known point, whatever the machine's speed: the run hangs in the save of its second
checkpoint (`CLOUDTUNE_FAULT_AT=before@<step>:stall`, cloudtune.train.checkpoints.fault_point), and is killed with
SIGKILL once its first checkpoint is complete (its manifest verified), so exactly that checkpoint is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WAIT_S = 900  # a bound far above a tiny run's time to its second save, on a loaded machine


def kill_at_first_checkpoint(script: Path, checkpoint_dir: Path, second: int) -> None:
    """Run `script` (a training run writing checkpoints to `checkpoint_dir`) until it hangs in the save of step
    `second` and its first checkpoint is complete, then SIGKILL it. AssertionError with the run's output when it ends
    or does not get there within WAIT_S."""
    from cloudtune.train.checkpoints import list_checkpoints, verify

    out = script.with_suffix(".log")
    env = dict(os.environ, CLOUDTUNE_FAULT_AT=f"before@{second}:stall")
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            stalled = b"fault injection" in out.read_bytes()
            if stalled and any(verify(c.path) is None for c in list_checkpoints(checkpoint_dir)):
                break
            time.sleep(0.1)
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text(errors="replace")[-4000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
