"""A local sweep's plan and start (the local launcher's `plan` and `submit` for a spec with `sweep:`).

The plan is pure: the sweep's id and directory, its settings, and the plan of its largest trial (values from
`cloudtune.spec.sweep.largest_values`), whose request, memory and cost the dry run shows. `start_sweep` writes the
sweep directory (see cloudtune.local.sweep) and starts the driver detached; `resume_sweep` starts it again on the same
directory (the study in its journal keeps the finished trials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloudtune.errors import InvalidInput
from cloudtune.launcher import JobRef
from cloudtune.local.statefile import read_state, write_state
from cloudtune.local.sweep import slots
from cloudtune.plan import Plan
from cloudtune.spec.sweep import largest_trial, largest_values


def plan_sweep(launcher: Any, spec: Any, settings: Any, *, suffix: str, bundle: Any = None) -> Plan:
    """The sweep's Plan: its largest trial's plan with the sweep's id, directory and notes."""

    sweep = spec.sweep
    trial = launcher.plan(largest_trial(spec), settings, suffix=f"{suffix}-t00", bundle=bundle)
    sweep_id = f"{spec.name}-{suffix}"
    jobs_dir = Path(settings.jobs_dir) if settings.jobs_dir else launcher.home() / "jobs"
    ranges = ", ".join(f"{name} {rng.kind} {list(rng.choice) if rng.choice is not None else list(rng.bounds)}"
                       for name, rng in sweep.ranges().items())
    at_once = len(slots(spec))
    notes = [f"sweep: {sweep.algorithm} search over {ranges}; {sweep.objective.direction} {sweep.objective.metric}; "
             f"{sweep.max_trials} trials, {at_once} at once on this machine (parallel_trials {sweep.parallel_trials}); "
             f"early stopping {sweep.early_stopping}; each trial is a local job with its values in its job config",
             "sweep: the request and cost shown are those of the largest trial ("
             + ", ".join(f"{k}={v}" for k, v in largest_values(sweep).items()) + "), and so is the memory unless a "
             "note names the memory-heaviest trial",
             f"sweep: cost bound {sweep.max_trials} trials x $0.00/h (this machine) = $0.00",
             *trial.notes]
    if sweep.early_stopping == "auto" and spec.train is not None and spec.train.hyperparameters.eval_every is None:
        notes.append("sweep: early_stopping auto acts on the evaluations during training, and this job has none: set "
                     "train.hyperparameters.eval_every to let it stop poor trials early")
    request = {"sweep": sweep.model_dump(mode="json"), "sweep_dir": str(jobs_dir / sweep_id), "suffix": suffix,
               "job_dir": str(jobs_dir / sweep_id), "trial": trial.request}
    return replace(trial, job_name=sweep_id, request=request, model_uri=None, notes=tuple(notes),
                   spec=spec.model_dump(mode="json"))


def sweep_ref(plan_request: dict[str, Any], sweep_id: str) -> JobRef:
    sweep_dir = plan_request["sweep_dir"]
    return JobRef(provider="local", job_id=sweep_id, native_id=sweep_dir, console_url=None, model_uri=None,
                  extra={"job_dir": sweep_dir, "kind": "sweep"})


def start_sweep(plan: Plan) -> JobRef:
    """Write the sweep directory and start its driver; idempotent like a job's submit."""
    sweep_dir = Path(plan.request["sweep_dir"])
    if (sweep_dir / "state.json").exists():
        return sweep_ref(plan.request, plan.job_name)
    write_sweep_dir(plan)
    _start_driver(sweep_dir)
    return sweep_ref(plan.request, plan.job_name)


def write_sweep_dir(plan: Plan) -> Path:
    """The sweep directory of a sweep plan, as its driver reads it (cloudtune.local.sweep: sweep.json, a pending
    state, an empty log), with no driver started. Returns the directory."""
    sweep_dir = Path(plan.request["sweep_dir"])
    sweep_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = {"sweep_id": plan.job_name, "suffix": plan.request["suffix"], "spec": plan.spec}
    tmp = sweep_dir / "sweep.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, sweep_dir / "sweep.json")
    (sweep_dir / "job.log").touch()
    write_state(sweep_dir, state="pending")
    return sweep_dir


def resume_sweep(ref: JobRef) -> JobRef:
    """Start the driver of an ended sweep (the launcher checked it is not running) again on its directory: finished
    trials stay finished, trials still running are followed, the rest of the budget is run. InvalidInput when its
    directory is gone."""
    sweep_dir = Path(ref.native_id)
    if not (sweep_dir / "sweep.json").is_file():
        raise InvalidInput(f"--resume {ref.job_id}: its sweep directory {sweep_dir} is gone",
                           fix="launch the sweep again without --resume")
    started = read_state(sweep_dir).get("started_at")
    (sweep_dir / "state.json").unlink()  # a fresh state: no driver pid, no outcome, until the new driver records itself
    write_state(sweep_dir, state="pending", started_at=started)
    _start_driver(sweep_dir)
    return JobRef(ref.provider, ref.job_id, ref.native_id, None, None, {"job_dir": str(sweep_dir), "kind": "sweep"})


def _start_driver(sweep_dir: Path) -> None:
    write_state(sweep_dir, launched_at=time.time())
    subprocess.Popen(
        [sys.executable, "-m", "cloudtune.local.sweeprun", str(sweep_dir)],
        stdin=subprocess.DEVNULL, stdout=open(sweep_dir / "supervisor.log", "ab"), stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True,
    )
