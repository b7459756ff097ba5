"""Everything a report states about one job, gathered in one place: the store's record (spec, plan with its price,
times), the job's state and failure reason from its launcher, its log read into a History, and, when the model
dir is on this machine, the finished job's metrics.json and model card.

Stdlib only (the launcher is reached through cloudtune.api's Job handle, passed in).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudtune.kit.cost import job_cost_usd
from cloudtune.report.history import History, parse_log
from cloudtune.report.samples import read_samples
from cloudtune.states import TERMINAL, JobState

__all__ = ["Facts", "collect", "duration", "card_section"]


@dataclass
class Facts:
    """One job as the report shows it. Times are epoch seconds, `duration_s` seconds, `usd_per_hour` US dollars per
    hour for all instances together (the plan's estimate), None where unknown. `duration_basis` says where the
    duration came from; `cause` is a failed job's triage ({cause, line, fix}, see `Job.triage`); `card_data` holds the model card's Data section lines (markdown), empty without one."""

    job_id: str
    name: str
    provider: str
    state: JobState
    created_at: float
    history: History
    failure_reason: str | None = None
    cause: dict[str, str] | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    instance_type: str | None = None
    instance_count: int = 1
    usd_per_hour: float | None = None
    cost_basis: str = "on-demand"
    duration_s: float | None = None
    duration_basis: str = ""
    model_uri: str | None = None
    model_metrics: dict[str, Any] = field(default_factory=dict)
    card_data: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples: dict[str, Any] | None = None  # text-to-image validation samples (cloudtune.report.samples)
    generated_at: float = field(default_factory=time.time)

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost in US dollars (`cloudtune.kit.cost.job_cost_usd`: duration x the plan's $/h); None when
        either is unknown."""
        return job_cost_usd(self.duration_s, self.usd_per_hour)

    @property
    def metrics(self) -> dict[str, Any]:
        """Final metrics: metrics.json of the model dir when read, else the log's `metrics {...}` line."""
        return self.model_metrics or self.history.metrics


def _seconds(value: Any) -> float | None:
    """An epoch-seconds number or an ISO-8601 string as epoch seconds; None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _state_file(job_dir: str | None) -> dict[str, Any]:
    """The local supervisor's state.json of a local job (started_at, ended_at), or {}."""
    if not job_dir:
        return {}
    try:
        data = json.loads((Path(job_dir) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def duration(record: Any, state: str, history: History, now: float | None = None) -> tuple[float | None, str]:
    """(seconds, where they came from) of a job, best source first: the billable time its cloud reported, its
    recorded start and end, the training time of the log's `train done:` line, then the store's own times."""
    extra = dict(record.extra or {})
    for key in ("billable_seconds", "billable_s", "billable_time_s"):
        if _seconds(extra.get(key)) is not None:
            return _seconds(extra[key]), "the billable time the cloud reported"
    times = {**_state_file(record.job_dir), **extra}
    start, end = _seconds(times.get("started_at") or times.get("start")), _seconds(times.get("ended_at") or times.get("end"))
    if start is not None and end is not None and end >= start:
        return end - start, "from the job's start to its end"
    if "train_runtime_s" in history.done:
        return history.done["train_runtime_s"], "training time from the log (loading and saving not included)"
    if state in TERMINAL:
        return max(0.0, record.updated_at - record.created_at), "from submission to the last status recorded"
    if start is not None or record.created_at:
        since = start if start is not None else record.created_at
        return max(0.0, (now or time.time()) - since), "elapsed so far (the job has not ended)"
    return None, ""


def card_section(text: str, title: str) -> list[str]:
    """The non-empty lines of one `## title` section of a markdown model card, [] when it has none."""
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return [line.strip() for line in m.group(1).splitlines() if line.strip()] if m else []


def _model_dir_files(model_uri: str | None) -> tuple[dict[str, Any], list[str]]:
    """metrics.json and the model card's Data section of a model dir on this machine; ({}, []) elsewhere."""
    if not model_uri or "://" in model_uri or not Path(model_uri).is_dir():
        return {}, []
    path = Path(model_uri)
    metrics: dict[str, Any] = {}
    try:
        loaded = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        metrics = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    try:
        card = card_section((path / "README.md").read_text(encoding="utf-8"), "Data")
    except OSError:
        card = []
    return metrics, card


def collect(job: Any, store: Any) -> Facts:
    """The Facts of a job: `job` is a cloudtune.api.Job (state, warnings and logs through its launcher), `store` the
    cloudtune.store.JobStore holding its record (spec, plan and times, read after the state is brought up to date)."""
    info = job.info()
    state = JobState(info["state"])
    record = store.get(job.job_id)
    history = parse_log(job.logs(follow=False))
    plan = record.plan or {}
    metrics, card = _model_dir_files(record.model_uri) if state == JobState.SUCCEEDED else ({}, [])
    seconds, basis = duration(record, state, history)
    return Facts(
        job_id=record.job_id, name=record.name, provider=record.provider, state=state, created_at=record.created_at,
        history=history, failure_reason=info.get("failure_reason"),
        cause=info.get("cause") if isinstance(info.get("cause"), dict) else None, spec=dict(plan.get("spec") or {}),
        instance_type=plan.get("instance_type"), instance_count=int(plan.get("instance_count") or 1),
        usd_per_hour=plan.get("estimated_usd_per_hour"), cost_basis=str(plan.get("cost_basis") or "on-demand"),
        duration_s=seconds, duration_basis=basis, model_uri=record.model_uri, model_metrics=metrics,
        card_data=card, warnings=list(info.get("warnings") or []),
        samples=read_samples(record.model_uri) if state == "succeeded" else None,
    )
