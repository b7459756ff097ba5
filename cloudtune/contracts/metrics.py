"""The metric contract between a job and a tuning service: each evaluation's figures as the job reports them.

One reporter in the recipe (cloudtune.train.metricreport) writes every figure three ways, and the plan side reads
the same formats from here:

- the metric line, for SageMaker's `MetricDefinitions` (a regex over the job's log, one capture group) and for
  anyone reading the log: `[cloudtune] metric eval_loss=2.0100 step=40` (`metric_line`, `metric_regex`);
- the hypertune file Vertex AI reads (the `cloudml-hypertune` package's format: JSON lines, each
  `{"global_step": "40", "<tag>": "2.01", "timestamp": 1765100000.0, "trial": "3"}` with string values and sorted
  keys, the file rewritten whole with the last 100 entries at every report, at `$CLOUD_ML_HP_METRIC_FILE` or
  `/tmp/hypertune/output.metrics`; see GoogleCloudPlatform/cloudml-hypertune, hypertune/hypertune.py);
- MLflow (`mlflow.log_metric(name, value, step=step)`), which Azure ML sweeps read, when `MLFLOW_TRACKING_URI` is set.

The last value reported for a metric is the trial's objective (SageMaker and Vertex AI both take the final one);
earlier values are the intermediate values early stopping compares. Standard library only.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from typing import Any

METRIC_PREFIX = "[cloudtune] metric "
METRIC_LINE_FORMAT = METRIC_PREFIX + "{name}={value} step={step}"
"""One figure of one evaluation: `[cloudtune] metric eval_loss=2.0100 step=40` (rank 0 prints it)."""

NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
"""What `metric_line` writes for a finite value; a non-finite one is written `nan`/`inf` and matches no regex here
(SageMaker cannot take it as a number)."""

HYPERTUNE_FILE_ENV = "CLOUD_ML_HP_METRIC_FILE"
HYPERTUNE_DEFAULT_FILE = "/tmp/hypertune/output.metrics"
HYPERTUNE_TRIAL_ENV = "CLOUD_ML_TRIAL_ID"
HYPERTUNE_KEEP = 100
"""cloudml-hypertune keeps the last 100 entries (`_MAX_NUM_METRIC_ENTRIES_TO_PRESERVE`)."""

_LINE = re.compile(r"\[cloudtune\] metric ([A-Za-z_][A-Za-z0-9_./-]*)=(\S+) step=(\d+)")


def format_number(value: float) -> str:
    """A figure as the line carries it: 6 significant digits, exponent form for small numbers (`2.01`, `1.5e-05`)."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.6g}"


def metric_line(name: str, value: float, step: int) -> str:
    return METRIC_LINE_FORMAT.format(name=name, value=format_number(float(value)), step=int(step))


def metric_regex(name: str) -> str:
    """The regex with one capture group (the value) that finds `name`'s metric lines in a log (SageMaker
    MetricDefinitions `Regex`; at most 500 characters there)."""
    return re.escape(METRIC_PREFIX) + re.escape(name) + "=(" + NUMBER + ") "


def parse_metric_line(line: str) -> tuple[str, float, int] | None:
    """(name, value, step) of a metric line found in `line`, or None."""
    found = _LINE.search(line)
    if found is None:
        return None
    try:
        return found.group(1), float(found.group(2)), int(found.group(3))
    except ValueError:
        return None


def metric_history(lines: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Every metric's (step, value) pairs in log order, from the metric lines among `lines`."""
    history: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        parsed = parse_metric_line(line)
        if parsed is not None:
            history.setdefault(parsed[0], []).append((parsed[2], parsed[1]))
    return history


def hypertune_entry(tag: str, value: float, step: int, trial: str = "0", timestamp: float | None = None) -> dict[str, Any]:
    """One entry of the hypertune file, exactly as cloudml-hypertune writes it (strings but the timestamp)."""
    return {"timestamp": time.time() if timestamp is None else timestamp, "trial": str(trial), tag: str(float(value)),
            "global_step": str(int(step) if step else 0)}


def hypertune_text(entries: list[dict[str, Any]]) -> str:
    """The hypertune file's whole text: the last HYPERTUNE_KEEP entries, one JSON object per line, keys sorted."""
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries[-HYPERTUNE_KEEP:])
