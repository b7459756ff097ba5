"""What `cloudtune status` and `list` say about a job's progress, times, metrics and cost.

The figures come from what the job itself reports, never from a second channel that could disagree:

- a local job: the status file its runtime keeps next to the checkpoints (cloudtune.contracts.progress), the model
  dir's metrics.json once it succeeded, and the local supervisor's start and end times (state.json);
- a cloud job: its log as the launcher already fetches it (`cloudtune logs`: the same `[cloudtune] step=N/TOTAL
  ...` lines the clouds' metric definitions read), parsed by cloudtune.report.history; its start, end and billable
  time as the launcher's status call reports them (recorded in the store by `Job.status`). A finished cloud job's
  figures are kept in the store after the first read, so its log is fetched once.

Cost is `cloudtune.kit.cost.job_cost_usd`: billable seconds x the plan's $/h. Stdlib only (imported by the CLI).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from cloudtune.kit.cost import epoch_seconds, job_cost_usd
from cloudtune.contracts.progress import main_metric, read_status, throughput_unit
from cloudtune.local.statefile import read_state
from cloudtune.report.history import parse_log
from cloudtune.states import TERMINAL, JobState

__all__ = ["iso", "job_times", "progress_from_log", "local_progress", "summarize"]

_LOG_KEYS = ("epoch", "loss", "learning_rate", "tokens_per_second", "eta_s")
_EVAL_NAMES = {"accuracy": "eval_accuracy", "f1": "eval_f1"}


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC time (`2026-11-29T10:00:00Z`), None for None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _local_state(job_dir: str | None) -> dict[str, Any]:
    try:
        data = json.loads((Path(job_dir or "") / "state.json").read_text(encoding="utf-8")) if job_dir else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_times(record: Any, state: str, now: float | None = None) -> dict[str, Any]:
    """{start, end (epoch s or None), seconds, basis}: a job's start and end as its provider reports them (a local
    job's supervisor; a cloud's status call), and its billable seconds (the cloud's own figure where it gives one,
    else end - start, or the time elapsed so far while it runs). Without reported times: submission to the status
    call that saw it end, said so in `basis`."""
    now = time.time() if now is None else now
    extra = dict(record.extra or {})
    times = {**_local_state(record.job_dir), **extra} if record.provider == "local" else extra
    start, end = epoch_seconds(times.get("started_at")), epoch_seconds(times.get("ended_at"))
    ended = state in TERMINAL
    billable = epoch_seconds(extra.get("billable_seconds")) if ended else None
    if billable is not None:
        return {"start": start, "end": end, "seconds": billable, "basis": "the billable time the cloud reported"}
    if ended and start is not None and end is not None and end >= start:
        return {"start": start, "end": end, "seconds": end - start, "basis": "from the job's start to its end"}
    if ended:
        start, end = start or record.created_at, end or record.updated_at
        return {"start": start, "end": end, "seconds": max(0.0, end - start),
                "basis": "from submission to the status that saw it end (the provider reported no times)"}
    since = start if start is not None else record.created_at
    return {"start": since, "end": None, "seconds": max(0.0, now - since), "basis": "elapsed so far"}


def local_progress(record: Any, now: float | None = None) -> dict[str, Any]:
    """A local job's status file (see cloudtune.contracts.progress) with `eta_s` brought up to now; {} without one.

    A file last written before the job's current attempt began (the supervisor's `attempt_started_at` in the job
    dir's state.json) is the earlier attempt's: while the retry loads and resumes, `phase` is `restarting` and there
    is no ETA (the earlier one, counted down, would read 0 s)."""
    where = (record.extra or {}).get("checkpoint_uri") or ((record.plan or {}).get("request") or {}).get("checkpoint_dir")
    data = read_status(where) if where and "://" not in str(where) else None
    if not data:
        return {}
    now = time.time() if now is None else now
    updated = epoch_seconds(data.get("updated_at"))
    attempt_start = read_state(Path(record.native_id)).get("attempt_started_at") if record.native_id else None
    if (data.get("phase") == "training" and updated is not None and isinstance(attempt_start, (int, float))
            and updated < attempt_start):
        data["phase"] = "restarting"
        data.pop("eta_s", None)
    if isinstance(data.get("eta_s"), (int, float)) and updated is not None:
        data["eta_s"] = max(0.0, float(data["eta_s"]) - max(0.0, now - updated))
    return data


def progress_from_log(lines: Iterable[str]) -> dict[str, Any]:
    """The status-file fields (step, total_steps, epoch, loss, learning_rate, tokens_per_second, eta_s, eval_loss,
    eval_step, metrics) read from a job's `[cloudtune]` log lines; {} when the log has none. `epoch_step`: the step
    whose line gave `epoch`, when it is not the last step (the log has no line with the final epoch)."""
    hist = parse_log(lines)
    out: dict[str, Any] = {}
    if hist.last_step is not None:
        out["step"] = hist.last_step
    if hist.total_steps:
        out["total_steps"] = hist.total_steps
    for key in _LOG_KEYS:
        if hist.steps.get(key):
            out[key] = hist.steps[key][-1][1]
    if hist.steps.get("epoch") and hist.steps["epoch"][-1][0] != out.get("step"):
        out["epoch_step"] = hist.steps["epoch"][-1][0]  # the log's last epoch is that of an earlier step
    metrics: dict[str, Any] = {k: v for k, v in hist.done.items()}
    for key, points in hist.evals.items():
        if points:
            metrics[_EVAL_NAMES.get(key, key)] = points[-1][1]
    if hist.evals.get("eval_loss"):
        out["eval_step"], out["eval_loss"] = hist.evals["eval_loss"][-1]
    metrics.update(hist.metrics or {})
    if metrics:
        out["metrics"] = metrics
    return out


def _model_metrics(record: Any) -> dict[str, Any]:
    uri = record.model_uri
    if not uri or "://" in uri:
        return {}
    try:
        data = json.loads((Path(uri) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def summarize(record: Any, state: str, progress: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The status view of a job: start/end (ISO-8601), elapsed or duration, progress (step/total, ETA, last train
    and eval loss, tokens/s), final metrics (finished jobs) and cost. All seconds are seconds, cost in USD.

    tokens/s is one figure with its `tokens_per_second_basis`: the last logging window while the job runs, the
    whole run's mean (the `tokens_per_second` metric) once it has ended, so the status never shows two; its
    `throughput_unit` says what it counts (`images` for an image task, else `tokens`)."""
    times = job_times(record, state, now)
    finished = state in TERMINAL
    metrics = dict(progress.get("metrics") or {})
    if "loss" in progress and "train_loss" not in metrics and not finished:
        metrics["train_loss"] = progress["loss"]
    if state == JobState.SUCCEEDED:
        metrics.update(_model_metrics(record))
    keys = ("step", "total_steps", "epoch", "epoch_step", "loss", "eval_loss", "eval_step", "learning_rate",
            "tokens_per_second", "eta_s", "phase")
    shown = {k: progress[k] for k in keys if progress.get(k) is not None}
    unit = throughput_unit((record.plan or {}).get("spec"))
    if "tokens_per_second" in shown:
        shown["tokens_per_second_basis"] = "the last logging window"
    if finished:
        shown.pop("eta_s", None)
        if isinstance(metrics.get("tokens_per_second"), (int, float)):  # one figure at the end: the whole run's
            shown["tokens_per_second"] = metrics["tokens_per_second"]
            counted = "input tokens" if unit == "tokens" else unit
            shown["tokens_per_second_basis"] = f"the whole run ({counted} / train_runtime_s)"
    if "tokens_per_second" in shown:
        shown["throughput_unit"] = unit
    if "updated_at" in progress:
        shown["updated_at"] = iso(epoch_seconds(progress["updated_at"]))
    usd_per_hour = (record.plan or {}).get("estimated_usd_per_hour")
    seconds = times["seconds"]
    return {
        "start": iso(times["start"]), "end": iso(times["end"]) if finished else None,
        "elapsed_s": None if seconds is None else round(seconds, 1),
        "duration_s": None if not finished or seconds is None else round(seconds, 1),
        "progress": shown, "metrics": metrics,
        "main_metric": dict(zip(("name", "value"), main_metric(metrics) or ())) or None,
        "cost": {"usd": job_cost_usd(seconds, usd_per_hour), "usd_per_hour": usd_per_hour, "seconds": seconds,
                 "basis": times["basis"] + ("" if finished else "; the job is still running")},
    }
