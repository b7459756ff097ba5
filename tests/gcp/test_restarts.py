"""One restart story on Vertex AI (issue 10 point 4), told the same way by the request, the plan note and the local
emulation: bad input (65), divergence (66) and the job's own error are never run again; a preemption (143, any
signal) and an infrastructure failure (75) are, resuming from the newest checkpoint.

Vertex AI restarts a worker that exits non-zero by itself (its docs, "Understand the training service"), so the
container's command (RUN_ONCE) keeps the first never-retried exit in the checkpoint dir and a restarted worker exits
at once with it. The shell is run here for real, with a stand-in `cloudtune-run` that counts its runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cloudtune.runtime.exitcodes import EXIT_DIVERGED, EXIT_INFRASTRUCTURE, EXIT_INPUT, EXIT_PREEMPTED, classify, retried
from tests.gcp.conftest import SUFFIX, settings, spec_from, write_data
from tests.gcp.test_plan import GS_IN

from cloudtune_gcp.launcher import GcpLauncher
from cloudtune.contracts.vertex import RUN_ONCE
from cloudtune_gcp.request import BOOTSTRAP, FINAL_EXIT_MARKER

STAND_IN = """#!/bin/sh
echo run >> "$RUNS"
if [ "$CODE" = wait ]; then trap 'exit 143' TERM; echo started > "$RUNS.started"; while :; do sleep 0.05; done; fi
exit "$CODE"
"""


def _run_once(tmp_path: Path, code: str, job_id: str = "1234") -> int:
    """One worker start of Vertex job `job_id`: RUN_ONCE under /bin/sh with the stand-in cloudtune-run; returns the
    exit status."""
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints") + "/",
           "RUNS": str(tmp_path / "runs"), "CODE": code, "CLOUD_ML_JOB_ID": job_id}
    return subprocess.run(["/bin/sh", "-c", RUN_ONCE, "cloudtune-bootstrap", "--job", "x"], env=env,
                          capture_output=True, timeout=60).returncode


@pytest.fixture()
def stand_in(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "cloudtune-run"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("code", [EXIT_INPUT, EXIT_DIVERGED, 1, EXIT_INFRASTRUCTURE, EXIT_PREEMPTED, 137])
def test_a_restarted_worker_runs_again_exactly_when_the_local_emulation_retries(stand_in: Path, code: int) -> None:
    first, second = _run_once(stand_in, str(code)), _run_once(stand_in, str(code))
    runs = (stand_in / "runs").read_text().count("run")
    assert first == second == code  # a worker that is not run again still ends with the first exit
    local = retried(classify(-signal.SIGKILL if code == 137 else code))  # the local supervisor's rule
    assert (runs == 2) is local, (code, runs)
    assert (stand_in / "checkpoints" / f"{FINAL_EXIT_MARKER}-1234").exists() is (not local)


def test_a_new_job_resumed_from_the_checkpoint_dir_runs(stand_in: Path) -> None:
    """`launch --resume` of a job that failed for good: the new job (another CLOUD_ML_JOB_ID) shares the checkpoint
    dir, and runs; the failed job's own marker stays its own."""
    assert _run_once(stand_in, str(EXIT_INPUT), job_id="1111") == EXIT_INPUT
    assert _run_once(stand_in, "0", job_id="2222") == 0
    assert (stand_in / "runs").read_text().count("run") == 2


def test_sigterm_reaches_cloudtune_run_and_its_exit_is_the_workers(stand_in: Path) -> None:
    env = {"PATH": f"{stand_in / 'bin'}:/usr/bin:/bin", "AIP_CHECKPOINT_DIR": str(stand_in / "checkpoints"),
           "RUNS": str(stand_in / "runs"), "CODE": "wait"}
    proc = subprocess.Popen(["/bin/sh", "-c", RUN_ONCE, "cloudtune-bootstrap"], env=env)
    try:
        for _ in range(2400):  # bounded: 120 s, far above a shell's start on a loaded machine
            if (stand_in / "runs.started").exists():
                break
            time.sleep(0.05)
        assert (stand_in / "runs.started").exists(), "the stand-in cloudtune-run never started"
        os.kill(proc.pid, signal.SIGTERM)  # a Spot reclaim: SIGTERM to the container's first process
        assert proc.wait(timeout=30) == EXIT_PREEMPTED
    finally:
        proc.kill()
        proc.wait()
    assert not list((stand_in / "checkpoints").glob(f"{FINAL_EXIT_MARKER}*"))  # a preemption runs again


def test_the_command_runs_the_restart_rule_and_the_plan_says_it(tmp_path: Path) -> None:
    write_data(tmp_path)
    spec = spec_from({"name": "spot", "resources": {"accelerator": "H100:8", "nodes": 2, "spot": True}, "inputs": GS_IN,
                      "train": {"model": "gpt2"}, "retries": 2}, tmp_path)
    plan = GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    scheduling = plan.request["customJob"]["jobSpec"]["scheduling"]
    assert scheduling["strategy"] == "SPOT" and scheduling["restartJobOnWorkerRestart"] is True
    assert "disableRetries" not in scheduling
    for pool in plan.request["customJob"]["jobSpec"]["workerPoolSpecs"]:
        assert pool["containerSpec"]["command"][2] == BOOTSTRAP and BOOTSTRAP.endswith(RUN_ONCE)
    [note] = [n for n in plan.notes if n.startswith("retries 2:")]
    assert "bad input (65), divergence (66)" in note and "preemption (143)" in note and FINAL_EXIT_MARKER in note
    none = GcpLauncher(home=tmp_path / "home").plan(spec_from({"name": "once", "inputs": GS_IN, "train": {"model": "gpt2"},
                                                               "retries": 0}, tmp_path), settings(), suffix=SUFFIX)
    assert none.request["customJob"]["jobSpec"]["scheduling"]["disableRetries"] is True
