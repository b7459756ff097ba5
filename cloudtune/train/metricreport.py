"""The one metric reporter: every evaluation's figures, reported the ways tuning services read them.

Formats and paths are in `cloudtune.contracts.metrics`. Rank 0 only (the callers check). Each report writes
(a) one metric line per figure to stdout (SageMaker MetricDefinitions; the local sweep reads the status file), (b) the
hypertune file when the job runs on Vertex AI (or its emulation), (c) MLflow when `MLFLOW_TRACKING_URI` is set, mlflow
is installed and the Trainer's own MLflow callback is not already logging them. A target that fails is a warning, once,
never a failed run.

`log_trial_values` gives MLflow a sweep trial's values too (params keyed by option path): Azure ML keeps a trial's
figures in the workspace's MLflow only, and the Azure launcher reads both back from there
(`cloudtune_azure.mlflowruns`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudtune.contracts.metrics import (
    HYPERTUNE_DEFAULT_FILE, HYPERTUNE_FILE_ENV, HYPERTUNE_TRIAL_ENV, hypertune_entry, hypertune_text, metric_line,
)

REPORTED = ("eval_loss", "eval_accuracy", "eval_f1", "perplexity", "train_loss")
"""The figures reported (the objectives a sweep may name, cloudtune.spec.sweep.METRICS); others stay in the status file."""


def on_vertex(environ: Mapping[str, str]) -> bool:
    """Whether the job runs under Vertex AI's contract (a tuning trial sets CLOUD_ML_TRIAL_ID; every CustomJob with an
    output directory sets AIP_MODEL_DIR, and so does the local emulation of it)."""
    return any(environ.get(k) for k in (HYPERTUNE_FILE_ENV, HYPERTUNE_TRIAL_ENV, "AIP_MODEL_DIR"))


def mlflow_module(environ: Mapping[str, str]) -> Any:
    """The mlflow module when `MLFLOW_TRACKING_URI` is set in `environ` and mlflow is installed, else None (mlflow is
    imported only then: it is off the path of every job that does not log to it)."""
    if not environ.get("MLFLOW_TRACKING_URI"):
        return None
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return None
    import mlflow

    return mlflow


def log_trial_values(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Log a sweep trial's values (option path -> value, `cloudtune.runtime.trial.apply`'s `job["trial"]`) as MLflow
    params (`hyperparameters.learning_rate` -> "0.0003") of the run MLflow is pointed at (MLFLOW_TRACKING_URI, and
    MLFLOW_RUN_ID where the service sets it, as Azure ML does). True when logged; False without a tracking URI or
    mlflow; a failure is one warning line, never a failed run. One process per trial calls it (node 0's first)."""
    mlflow = mlflow_module(os.environ if environ is None else environ) if values else None
    if mlflow is None:
        return False
    try:
        mlflow.log_params({name: str(value) for name, value in values.items()})
    except Exception as exc:  # noqa: BLE001 - an unreachable tracking server must not fail the run
        print(f"[cloudtune] warning: MLflow params (the trial's values) not logged: {exc}", flush=True)
        return False
    return True


class MetricReporter:
    """Report figures as `report(figures, step)`; `mlflow` says whether this reporter logs to MLflow itself."""

    def __init__(self, environ: Mapping[str, str] | None = None, mlflow: bool = True) -> None:
        env = os.environ if environ is None else environ
        self.hypertune_path = Path(env.get(HYPERTUNE_FILE_ENV) or HYPERTUNE_DEFAULT_FILE) if on_vertex(env) else None
        self.trial = env.get(HYPERTUNE_TRIAL_ENV, "0")
        self.entries: list[dict[str, Any]] = []
        self.mlflow = mlflow_module(env) if mlflow else None
        self._warned: set[str] = set()

    def report(self, figures: Mapping[str, Any], step: int) -> None:
        """Report the REPORTED figures among `figures` (numbers) as of optimizer `step`."""
        chosen = {k: float(v) for k, v in figures.items() if k in REPORTED and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        for name, value in chosen.items():
            print(metric_line(name, value, step), flush=True)
        if self.hypertune_path is not None:
            self.entries += [hypertune_entry(n, v, step, self.trial) for n, v in chosen.items() if math.isfinite(v)]
            self._write_hypertune()
        if self.mlflow is not None and chosen:
            try:
                self.mlflow.log_metrics({k: v for k, v in chosen.items() if math.isfinite(v)}, step=int(step))
            except Exception as exc:  # noqa: BLE001 - an unreachable tracking server must not fail the run
                self._warn("mlflow", f"MLflow metrics not logged: {exc}")

    def _write_hypertune(self) -> None:
        path = self.hypertune_path
        assert path is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            tmp.write_text(hypertune_text(self.entries), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            self._warn("hypertune", f"hypertune metric file not written at {path}: {exc}")

    def _warn(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"[cloudtune] warning: {text}", flush=True)
