"""Sweeps in the job store, whoever runs them: the sweep's record (`extra["kind"] == "sweep"`), its trials as one
provider-neutral list (cloudtune.sweeptrials.Trial), the best trial, and what `status`, `list`, `download`,
`train.model: job:<SWEEP>` and the report read.

A local sweep's trials are job records linked to it (`extra["sweep"]`, written by cloudtune.local.sweeprun); a cloud
sweep's come from its launcher's `sweep_trials(ref)` (cloudtune.sweeptrials.SweepLauncher). The best succeeded trial's
model is the sweep's model: `record_outcome` writes its location on the sweep's record when the sweep ends.
"""

from __future__ import annotations

import math
from typing import Any

from cloudtune.jobprogress import summarize
from cloudtune.states import is_terminal
from cloudtune.launcher import JobRef
from cloudtune.spec.sweep import MAXIMIZED
from cloudtune.store import JobRecord, JobStore
from cloudtune.sweeptrials import Trial, best, counts, ranked

KIND = "sweep"


def is_sweep(record: JobRecord) -> bool:
    return (record.extra or {}).get("kind") == KIND


def direction(record: JobRecord) -> str:
    """minimize or maximize: the sweep's objective goal as its plan's spec gives it."""
    sweep = (((record.plan or {}).get("spec") or {}).get("sweep") or {})
    objective = sweep.get("objective") or {}
    goal = objective.get("goal")
    if goal in ("minimize", "maximize"):
        return goal
    return "maximize" if objective.get("metric") in MAXIMIZED else "minimize"


def metric(record: JobRecord) -> str:
    return str(((((record.plan or {}).get("spec") or {}).get("sweep") or {}).get("objective") or {}).get("metric")
               or "eval_loss")


def local_trial(record: JobRecord, state: str, progress: dict[str, Any] | None, name: str) -> Trial:
    """A local trial from its job record (and, while it runs, its reported progress); a failed one's note is its
    failure reason."""
    extra = record.extra or {}
    intermediate = extra.get("intermediate")
    if intermediate is None and progress:
        intermediate = [[s, v] for s, v in ((progress.get("history") or {}).get(name) or []) if v is not None]
    view = summarize(record, state, progress or {})
    objective = extra.get("objective")
    shown = "pruned" if extra.get("pruned") else state
    return Trial(number=int(extra.get("trial", 0)), parameters=dict(extra.get("parameters") or {}), state=shown,
                 objective=float(objective) if isinstance(objective, (int, float)) else None, job_id=record.job_id,
                 intermediate=list(intermediate or []), cost_usd=(view.get("cost") or {}).get("usd"),
                 model_uri=record.model_uri, duration_s=view.get("elapsed_s"),
                 note=extra.get("failure_reason") if shown == "failed" else None)


def trials(record: JobRecord, launcher: Any, store: JobStore, get_job: Any) -> list[Trial]:
    """The sweep's trials, best first. `get_job(job_id)` gives a trial's Job handle (its state and progress are
    asked while it runs)."""
    if record.provider != "local":
        ref = JobRef(record.provider, record.job_id, record.native_id or record.job_id, record.console_url,
                     record.model_uri, dict(record.extra))
        found = list(launcher.sweep_trials(ref)) if hasattr(launcher, "sweep_trials") else []
        return ranked(found, direction(record))
    name = metric(record)
    out = []
    for child in store.children("sweep", record.job_id):
        state, progress = child.state, None
        if not is_terminal(state) or "objective" not in child.extra:
            job = get_job(child.job_id)
            state, progress = job.status(), job.progress()
            child = job.record
        out.append(local_trial(child, state, progress, name))
    started = {t.number for t in out}
    for number, left in sorted(((record.extra or {}).get("unstarted") or {}).items(), key=lambda kv: int(kv[0])):
        if int(number) not in started:  # a trial the driver could not start: no job, its reason on the sweep
            out.append(Trial(number=int(number), parameters=dict(left.get("parameters") or {}), state="failed",
                             note=left.get("note")))
    return ranked(out, direction(record))


def view(record: JobRecord, found: list[Trial]) -> dict[str, Any]:
    """The sweep's part of `status --json`: objective, trials best first, the best trial, counts and total cost."""
    goal = direction(record)
    top = best(found, goal)
    costs = [t.cost_usd for t in found if isinstance(t.cost_usd, (int, float))]
    return {
        "kind": KIND,
        "objective": {"metric": metric(record), "goal": goal},
        "best_trial": top.to_dict() if top else None,
        "trial_counts": counts(found),
        "trials_cost_usd": round(sum(costs), 4) if costs else None,
        "trials": [t.to_dict() for t in found],
    }


def record_outcome(store: JobStore, sweep_id: str, state: str, reason: str | None) -> JobRecord:
    """Write a local sweep's end on its record: the state, the reason, the best trial and its model (the sweep's
    model: `cloudtune download SWEEP`, `train.model: job:SWEEP`)."""
    record = store.get(sweep_id)
    name = metric(record)
    found = [local_trial(c, c.state, None, name) for c in store.children("sweep", sweep_id)]
    top = best(found, direction(record))
    if top is not None:
        record = store.update(sweep_id, model_uri=top.model_uri)
    extra: dict[str, Any] = {"best_trial": top.job_id if top else None, "trial_counts": counts(found)}
    if reason is not None or state != "succeeded":
        extra["failure_reason"] = reason
    return store.record_status(sweep_id, state, **extra)


def best_job_id(record: JobRecord, found: list[Trial]) -> str | None:
    top = best(found, direction(record))
    return top.job_id if top else (record.extra or {}).get("best_trial")


def objective_text(value: float | None) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.6g}"


def best_objective(record: JobRecord) -> dict[str, Any] | None:
    """{name, value} of a sweep's best trial objective as its trials' records hold it (local), or as the sweep's
    record keeps it (`extra["best_objective"]`, cloud sweeps); None before any trial finished."""
    name = metric(record)
    kept = (record.extra or {}).get("best_objective")
    if isinstance(kept, (int, float)):
        return {"name": name, "value": float(kept)}
    if record.provider != "local":
        return None
    store = JobStore()
    found = [local_trial(c, c.state, None, name) for c in store.children("sweep", record.job_id)]
    top = best(found, direction(record))
    return {"name": name, "value": top.objective} if top and top.objective is not None else None
