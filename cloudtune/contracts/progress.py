"""Training progress as the job itself reports it: throughput and ETA, and the status file written next to the
checkpoints.

The runtime (rank 0) keeps one small JSON file, `cloudtune-status.json`, in the checkpoint dir and replaces it
atomically (write a temp file, then rename) at every logged step, evaluation and at the end of training. It holds
the same figures as the step log lines (cloudtune.contracts.logfmt), so `cloudtune status` of a local job (which reads
the file) and of a cloud job (which reads the log the cloud collects) show the same numbers.

Status file fields (all optional but `version` and `updated_at`): `step`, `total_steps` (optimizer steps),
`epoch`, `loss` (last logged train loss), `learning_rate`, `tokens_per_second` (input tokens per second over the
last logging window, all ranks together), `eta_s` (seconds of training left, as of `updated_at`), `eval_loss` and
`eval_step` (the last evaluation), `history` (every evaluation's figures: name -> [[step, value], ...]), `phase` (`training`, `done`), `metrics` (final and eval figures by name),
`started_at` and `updated_at` (epoch seconds, UTC), `trained_s` (seconds of training over every attempt: the
attempts before a resume, read back from this file, plus this one's so far).

Stdlib only: the CLI and cloudtune.api import it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune.contracts.tbevents import EventWriter

__all__ = ["STATUS_FILE", "ProgressReport", "StepClock", "format_duration", "main_metric", "read_status",
           "throughput_unit", "write_status"]

STATUS_FILE = "cloudtune-status.json"
STATUS_VERSION = 1

IMAGE_TASKS = frozenset({"text-to-image"})
"""Tasks whose `tokens_per_second` counts images, not input tokens (cloudtune.train.text_to_image: one training
image per example; the field keeps its name so that the log line, the status file and the cloud metric regexes stay
one format). The spec's `cloudtune.spec.image.IMAGE_TASK`, spelled here because this module is stdlib only."""


def throughput_unit(spec: dict[str, Any] | None) -> str:
    """What a job's `tokens_per_second` counts, from its spec (a JobSpec dump): "images" for an image task, else
    "tokens" (input tokens, all ranks together)."""
    task = ((spec or {}).get("train") or {}).get("task")
    return "images" if task in IMAGE_TASKS else "tokens"


MAIN_METRICS: tuple[str, ...] = ("eval_accuracy", "eval_loss", "train_loss", "loss")
"""The metric `cloudtune list` shows, first present wins: accuracy (classification), else eval loss, else train loss."""


def write_status(directory: Path | str, data: dict[str, Any]) -> Path:
    """Replace `<directory>/cloudtune-status.json` atomically with `data` (+ `version`, `updated_at` in epoch s).

    A reader sees the old file or the new one, never a part. Non-finite floats are written as JSON null."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = {"version": STATUS_VERSION, **_finite(data), "updated_at": time.time()}
    target = directory / STATUS_FILE
    tmp = directory / f"{STATUS_FILE}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


def read_status(directory: Path | str) -> dict[str, Any] | None:
    """The status file of a checkpoint dir as a dict, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((Path(directory) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def format_duration(seconds: float | None) -> str:
    """`seconds` as `45s`, `2m03s`, `1h02m` or `2d03h`; `-` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def main_metric(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """(name, value) of the metric a job is summed up by (see MAIN_METRICS), or None when it has none."""
    for name in MAIN_METRICS:
        value = (metrics or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, float(value)
    return None


@dataclass
class StepClock:
    """Throughput and ETA of a training run from (step, tokens seen, time) readings at each logged step.

    `begin` is called when training (or a resumed run) starts. ETA is the steps left x the mean seconds per step
    since `begin` (evaluations and checkpoint saves included, since they recur); tokens/s is over the last
    window between two readings. Times are `time.monotonic()` seconds unless given."""

    total_steps: int = 0
    start_step: int = 0
    start_time: float = 0.0
    last_tokens: int = 0
    last_time: float = 0.0
    started_at: float = field(default_factory=time.time)

    def begin(self, step: int, tokens: int, total_steps: int, now: float | None = None) -> None:
        """Start timing at `step` with `tokens` input tokens seen so far, out of `total_steps`."""
        now = time.monotonic() if now is None else now
        self.total_steps, self.start_step, self.start_time = int(total_steps), int(step), now
        self.last_tokens, self.last_time, self.started_at = int(tokens), now, time.time()

    def reading(self, step: int, tokens: int, now: float | None = None) -> tuple[float | None, float | None]:
        """(input tokens per second since the last reading, seconds of training left) at `step`; None when
        not known yet (no time has passed, no step done, no total)."""
        now = time.monotonic() if now is None else now
        window = now - self.last_time
        tps = (tokens - self.last_tokens) / window if window > 0 and tokens >= self.last_tokens else None
        self.last_tokens, self.last_time = int(tokens), now
        done, spent = step - self.start_step, now - self.start_time
        if self.total_steps <= 0 or done <= 0 or spent <= 0:
            return tps, None
        return tps, max(0.0, (self.total_steps - step) * spent / done)


_EVAL_SKIP = ("_runtime", "_per_second", "_time")


class ProgressReport:
    """What rank 0 reports while it trains: the status file (in `status_dir`, the checkpoint dir) and, when
    `tensorboard_dir` is given, TensorBoard scalars there (cloudtune.contracts.tbevents). A file that cannot be
    written is a warning, once, never a failed run."""

    def __init__(self) -> None:
        self.status_dir: Path | None = None
        self.data: dict[str, Any] = {}
        self.tb: Any = None
        self._warned = False

    def open(self, status_dir: Path | str, tensorboard_dir: Path | str | None = None) -> None:
        """Start reporting (again: a resumed run keeps nothing of the last attempt's file but overwrites it)."""
        self.status_dir = Path(status_dir)
        if tensorboard_dir is not None and self.tb is None:
            try:
                self.tb = EventWriter(tensorboard_dir)
            except OSError as exc:
                self._warn(f"TensorBoard event file not written in {tensorboard_dir}: {exc}")

    def update(self, **fields: Any) -> None:
        """Set the fields given (None leaves a field as it was) and rewrite the status file."""
        self.data.update({k: v for k, v in fields.items() if v is not None})
        self._write()

    def metric(self, name: str, value: Any) -> None:
        """Record one final figure under `metrics` (numbers only)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.data.setdefault("metrics", {})[name] = value
            self._write()

    def evaluated(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        """An evaluation at optimizer `step`: its eval_* figures (not timings) into the file (the latest under
        `metrics`, every one under `history`: name -> [[step, value], ...]) and TensorBoard. Returns the figures."""
        figures = {k: float(v) for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(_EVAL_SKIP)
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "eval_loss" in figures and "eval_accuracy" not in figures:
            figures["perplexity"] = math.exp(min(figures["eval_loss"], 700.0))
        self.data.setdefault("metrics", {}).update(figures)
        history = self.data.setdefault("history", {})
        for name, value in figures.items():  # the final evaluation at the last eval step's step: one point, the latest
            series = history.setdefault(name, [])
            if series and series[-1][0] == int(step):
                series[-1] = [int(step), value]
            else:
                series.append([int(step), value])
        self.update(eval_loss=figures.get("eval_loss"), eval_step=int(step))
        self.scalars(step, {"eval/" + k.removeprefix("eval_"): v for k, v in figures.items()})
        return figures

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at `step` (nothing without a TensorBoard dir)."""
        if self.tb is None:
            return
        try:
            self.tb.scalars(step, values)
        except OSError as exc:
            self._warn(f"TensorBoard event file not written: {exc}")

    def _write(self) -> None:
        if self.status_dir is None:
            return
        try:
            write_status(self.status_dir, self.data)
        except OSError as exc:
            self._warn(f"status file not written in {self.status_dir}: {exc}")

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"[cloudtune] warning: {text}", flush=True)
