"""A local sweep driver killed while it starts a trial: the next driver follows the job that was made, or starts the
trial that has none, with the values it was given; every trial ends linked to the sweep, each once.

Each crash point of `SweepRun.start` is produced by a driver that did only its first part (the trial asked, named,
recorded, created); the successor is the real driver loop (`SweepRun.run`, as `launch --resume` starts it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cloudtune.api as api
from cloudtune.local.sweep import suggest
from cloudtune.local.sweepplan import write_sweep_dir
from cloudtune.local.statefile import read_state
from cloudtune.local.sweeprun import SweepRun
from cloudtune.store import JobStore
from tests.test_launch_killed_before_supervisor import KILLED_LAUNCH

pytestmark = pytest.mark.slow
RATES = [1e-4, 1e-3, 1e-2]
# A trial: a `command` job (no model to load, so each trial is a second or two, not a training job's start-up) that
# reads its value as `--lr=`, runs a little while (long enough to be cancelled) and reports its objective
TRIAL = """import sys, time
lr = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--lr=")))
time.sleep(2)
print(f"[cloudtune] metric loss={lr * 10:.6g} step=1", flush=True)
"""


@pytest.fixture()
def sweep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A grid sweep over three learning rates, written as `launch` writes it, with no driver running yet."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "trial.py").write_text(TRIAL)
    spec = {"name": "killed", "command": "python trial.py", "code": "code",
            "sweep": {"parameters": {"lr": {"choice": RATES}}, "algorithm": "grid", "objective": {"metric": "loss"},
                      "max_trials": 3, "parallel_trials": 1, "early_stopping": "off"}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    return write_sweep_dir(api.plan(tmp_path / "sweep.yaml", "local"))


def test_each_crash_point_of_a_trial_start_is_resumed_without_a_lost_or_doubled_trial(sweep_dir: Path) -> None:
    dead = SweepRun(sweep_dir)  # the killed driver: each trial got only as far as its crash point
    asked = dead.study.ask()  # killed after ask: no name, no values yet
    named = dead.study.ask()
    plan = dead.trial_plan(named.number, suggest(named, dead.sweep.ranges()), None)
    named.set_user_attr("job_id", plan.job_name)  # killed before its record: named, nothing recorded
    made = dead.study.ask()
    made_plan = dead.trial_plan(made.number, suggest(made, dead.sweep.ranges()), None)
    made.set_user_attr("job_id", made_plan.job_name)
    job = api.submit(made_plan, launcher=dead.launcher, store=dead.store)  # killed before the link: created, unlinked
    assert "sweep" not in JobStore().get(job.job_id).extra

    successor = SweepRun(sweep_dir)
    state, reason = successor.run()

    assert (state, reason) == ("succeeded", None)
    store = JobStore()
    trials = store.children("sweep", successor.sweep_id)
    assert sorted(t.extra["parameters"]["lr"] for t in trials) == RATES  # each value once
    assert sorted(t.extra["trial"] for t in trials) == sorted([asked.number, named.number, made.number])
    assert all(t.state == "succeeded" and isinstance(t.extra["objective"], float) for t in trials)
    assert job.job_id in {t.job_id for t in trials}  # the job the killed driver made was followed, not run again
    assert {r.job_id for r in store.list(limit=50)} == {t.job_id for t in trials}  # and no job ran outside the sweep
    done = [t for t in successor.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(done) == 3 and len(successor.study.get_trials(deepcopy=False)) == 3


@pytest.mark.parametrize("crash", ["unconfirmed", "seen-never-created", "created-unconfirmed", "before-supervisor"])
def test_a_trial_killed_between_its_record_and_its_confirmation_runs_once_under_its_name(sweep_dir: Path,
                                                                                       crash: str, tmp_path: Path) -> None:
    """Killed after the trial's record: before the create (`unconfirmed`; `seen-never-created`: a `status` or `list`
    since then found the launch's process gone and marked it "never created"), inside the create, after the job's
    state was written but before its supervisor started (`before-supervisor`: nothing runs the job), or after the
    create but before the record was confirmed (`created-unconfirmed`: the job runs; confirming it later must keep
    the sweep's link)."""
    dead = SweepRun(sweep_dir)
    trial = dead.study.ask()
    plan = dead.trial_plan(trial.number, suggest(trial, dead.sweep.ranges()), None)
    trial.set_user_attr("job_id", plan.job_name)
    record = api.launch_record(plan, None)
    record.extra["launch_pid"] = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a pid no process has
    JobStore().add(record)
    if crash == "seen-never-created":
        assert api.get_job(plan.job_name).status() == "failed"
        assert JobStore().get(plan.job_name).extra["launch"] == "never created"
    if crash == "created-unconfirmed":
        dead.launcher.submit(plan)
    if crash == "before-supervisor":
        (tmp_path / "trial-plan.json").write_text(plan.to_json())
        killed = subprocess.run([sys.executable, "-c", KILLED_LAUNCH, str(tmp_path / "trial-plan.json"), "before"],
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9 and read_state(Path(plan.request["job_dir"]))["state"] == "pending", killed.stderr

    successor = SweepRun(sweep_dir)
    state, _ = successor.run()

    assert state == "succeeded"
    trials = JobStore().children("sweep", successor.sweep_id)
    assert len(trials) == 3 and plan.job_name in {t.job_id for t in trials}
    assert all(t.state == "succeeded" and t.extra["launch"] == "confirmed" for t in trials)
    assert successor.failures() == 0 and len(JobStore().list(limit=0)) == 3  # no second job for the trial


def test_a_trial_cancelled_with_the_sweep_runs_again_and_is_not_a_failure(sweep_dir: Path) -> None:
    """Killed while it cancelled the sweep: the trial it had withdrawn (its job cancelled) ends cancelled under the
    successor, which runs its values again and counts no failure; the values are enqueued once."""
    dead = SweepRun(sweep_dir)
    dead.start()
    (number, run), = dead.running.items()
    dead.withdraw(run)
    dead.requeue(run.trial)  # and, in the worst instant, already enqueued its values but not told the study

    successor = SweepRun(sweep_dir)
    state, _ = successor.run()

    assert state == "succeeded" and successor.failures() == 0
    trials = JobStore().children("sweep", successor.sweep_id)
    by_state = sorted((t.state, t.extra["parameters"]["lr"]) for t in trials)
    assert [s for s, _ in by_state] == ["cancelled", "succeeded", "succeeded", "succeeded"]
    assert sorted(rate for s, rate in by_state if s == "succeeded") == RATES  # the withdrawn values ran again, once
    assert next(t for t in trials if t.state == "cancelled").extra["trial"] == number


def test_cancel_of_a_sweep_whose_driver_died_stops_its_running_trials(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A local sweep's trials run under their own supervisors: a driver killed with -9 leaves the sweep failed and
    a trial running. `cloudtune cancel SWEEP` then stops that trial (before, it answered "already failed")."""
    import os
    import signal
    import time

    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    code = tmp_path / "code"
    code.mkdir()
    (code / "wait.py").write_text("import time\nfor _ in range(600):\n    time.sleep(1)\n")
    spec = {"name": "orphan", "command": "python wait.py", "code": str(code),
            "sweep": {"parameters": {"width": {"choice": [1, 2]}}, "algorithm": "grid", "max_trials": 2,
                      "parallel_trials": 1, "early_stopping": "off", "objective": {"metric": "loss"}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    job = api.launch(tmp_path / "sweep.yaml")
    try:
        deadline = time.monotonic() + 240
        while not [t for t in job.running_trials() if t.status() == "running"] and time.monotonic() < deadline:
            time.sleep(0.5)  # the trial's process started (not only its job recorded)
        [trial] = job.running_trials()
        os.kill(read_state(Path(job.record.job_dir))["supervisor_pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while job.status() != "failed" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert job.status() == "failed" and trial.status() == "running"  # it runs on under its own supervisor
        env = {**os.environ, "CLOUDTUNE_HOME": str(home)}
        out = subprocess.run([sys.executable, "-m", "cloudtune.cli", "cancel", job.job_id], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 0 and f"stopped its running trial(s): {trial.job_id}" in out.stdout, out.stderr
        assert trial.wait(timeout=120) == "cancelled"
    finally:
        for left in job.running_trials():
            left.cancel()


def test_a_trial_that_could_not_start_is_listed_with_its_reason(sweep_dir: Path, tmp_path: Path) -> None:
    """A trial the driver cannot start (here: the code folder went away after the launch) has no job of its own: it
    is still one of the sweep's trials, failed, with the reason, in `trials()` (status, --json, report)."""
    import shutil

    import time

    from cloudtune.store import JobRecord

    run = SweepRun(sweep_dir)
    now = time.time()  # the sweep's record, as `launch` writes it
    JobStore().add(JobRecord(job_id=run.sweep_id, provider="local", name="killed", state="running", created_at=now,
                             updated_at=now, plan={"spec": yaml.safe_load((tmp_path / "sweep.yaml").read_text())},
                             extra={"kind": "sweep"}))
    shutil.rmtree(tmp_path / "code")
    state, reason = run.run()
    assert state == "failed" and reason
    listed = api.get_job(run.sweep_id).trials()
    assert listed and all(t.state == "failed" and t.job_id is None for t in listed)
    assert all(t.note and t.note.startswith("could not start: ") and "code" in t.note for t in listed)
    assert {t.number for t in listed} == {t.number for t in run.study.get_trials(deepcopy=False)}
