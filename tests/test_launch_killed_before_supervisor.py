"""A local launch killed while it starts the job's supervisor (cloudtune.local.starting): killed before the
supervisor's start, the job is said to have never started at once (no start-up grace to wait out), and a start of
the same plan again runs it; killed just after, the job runs, once. A resumed sweep whose driver died there runs
the trial under its name, once. Each kill is a real SIGKILL of a launching process at that point of `submit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.local.launcher import LocalLauncher
from cloudtune.local.starting import NEVER_STARTED, SUPERVISOR_DIED, locked
from cloudtune.local.statefile import read_state
from cloudtune.plan import Plan
from cloudtune.store import JobStore

# a launching process that SIGKILLs itself where `submit` starts the supervisor: before or just after the start
KILLED_LAUNCH = """
import json, os, signal, subprocess, sys
from cloudtune import api
from cloudtune.plan import Plan

real = subprocess.Popen
def popen(argv, *args, **kwargs):
    if "cloudtune.local.supervisor" not in argv:
        return real(argv, *args, **kwargs)
    if sys.argv[2] == "after":
        real(argv, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
subprocess.Popen = popen
api.submit(Plan.from_dict(json.load(open(sys.argv[1]))))
"""
WAIT_S = 300


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src/run.sh").write_text("echo ran once\n")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"name": "half", "command": "sh run.sh", "code": "src"}))
    return api.plan(tmp_path / "job.yaml", "local")


def _killed_launch(tmp_path: Path, plan: Plan, where: str) -> None:
    (tmp_path / "plan.json").write_text(plan.to_json())
    out = subprocess.run([sys.executable, "-c", KILLED_LAUNCH, str(tmp_path / "plan.json"), where],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode == -9, out.stderr


def _wait_ended(ref_status, deadline_s: float = WAIT_S) -> str:
    deadline = time.monotonic() + deadline_s
    while (state := ref_status()) not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


def _runs(job_dir: Path) -> int:
    return (job_dir / "job.log").read_text().count("ran once")


def test_killed_before_the_supervisor_started_it_never_started_and_a_second_start_runs_it(tmp_path: Path,
                                                                                            plan: Plan) -> None:
    _killed_launch(tmp_path, plan, "before")
    job_dir = Path(plan.request["job_dir"])
    assert read_state(job_dir)["state"] == "pending"  # what the kill left
    job = api.get_job(plan.job_name)
    assert job.status() == "failed"  # at once: nothing holds the job's lock, so nothing is starting it
    record = JobStore().get(plan.job_name)
    assert record.extra["launch"] == "never created" and record.state == "failed", record.extra
    assert read_state(job_dir)["failure_reason"] == NEVER_STARTED and LocalLauncher().find(plan) is None

    launcher = LocalLauncher()
    ref = launcher.submit(plan)  # the same plan again: it starts now
    assert _wait_ended(lambda: launcher.status(ref).state) == "succeeded"
    assert _runs(job_dir) == 1
    assert launcher.submit(plan) == ref and _runs(job_dir) == 1  # and it is not run again


def test_killed_just_after_the_supervisor_started_the_job_runs_once(tmp_path: Path, plan: Plan) -> None:
    _killed_launch(tmp_path, plan, "after")
    job = api.get_job(plan.job_name)
    assert job.status() in ("pending", "running", "succeeded")  # the supervisor holds the lock the launch handed it
    assert job.wait(timeout=WAIT_S) == "succeeded"
    assert JobStore().get(plan.job_name).extra["launch"] == "confirmed"
    job_dir = Path(plan.request["job_dir"])
    LocalLauncher().submit(plan)
    assert _runs(job_dir) == 1 and "another supervisor" not in (job_dir / "supervisor.log").read_text()


def test_two_starts_of_one_plan_at_once_run_it_once(plan: Plan) -> None:
    launcher = LocalLauncher()
    refs: list = []
    threads = [threading.Thread(target=lambda: refs.append(launcher.submit(plan))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert len(refs) == 4 and len(set(r.job_id for r in refs)) == 1
    assert _wait_ended(lambda: launcher.status(refs[0]).state) == "succeeded"
    assert _runs(Path(plan.request["job_dir"])) == 1


def test_a_supervisor_started_twice_runs_the_job_once(plan: Plan) -> None:
    """A second supervisor of a job already claimed (started by hand, or late) exits at once and changes nothing."""
    launcher = LocalLauncher()
    ref = launcher.submit(plan)
    job_dir = Path(plan.request["job_dir"])
    assert _wait_ended(lambda: launcher.status(ref).state) == "succeeded"
    before = json.dumps(read_state(job_dir), sort_keys=True)
    late = subprocess.run([sys.executable, "-m", "cloudtune.local.supervisor", str(job_dir)], capture_output=True,
                          text=True, timeout=WAIT_S, env={**os.environ})
    assert late.returncode == 0 and "another supervisor runs this job, or it no longer waits for one" in late.stderr
    assert json.dumps(read_state(job_dir), sort_keys=True) == before and _runs(job_dir) == 1


def test_a_start_again_waits_out_a_status_that_holds_the_lock_for_a_moment(tmp_path: Path, plan: Plan) -> None:
    """`status` and `find` take the job's lock while they decide a launch's outcome: a start of the same plan at that
    moment waits for it, and starts the job."""
    _killed_launch(tmp_path, plan, "before")
    job_dir = Path(plan.request["job_dir"])
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locked(job_dir) as fd:
            assert fd is not None
            held.set()
            release.wait(timeout=WAIT_S)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(timeout=WAIT_S)
    threading.Timer(0.3, release.set).start()  # well inside submit's wait for the lock (LOCK_WAIT_S)
    launcher = LocalLauncher()
    ref = launcher.submit(plan)
    holder.join(timeout=WAIT_S)
    assert _wait_ended(lambda: launcher.status(ref).state) == "succeeded" and _runs(job_dir) == 1


def test_a_supervisor_that_dies_before_it_records_itself_is_named_as_the_cause(tmp_path: Path, plan: Plan) -> None:
    _killed_launch(tmp_path, plan, "before")
    job_dir = Path(plan.request["job_dir"])
    (job_dir / "plan.json").write_text("{")  # what the supervisor reads first, after its claim
    crashed = subprocess.run([sys.executable, "-m", "cloudtune.local.supervisor", str(job_dir)], capture_output=True,
                             text=True, timeout=WAIT_S)
    assert crashed.returncode != 0 and "claimed_by" in read_state(job_dir)
    assert api.get_job(plan.job_name).status() == "failed"
    assert read_state(job_dir)["failure_reason"] == SUPERVISOR_DIED
