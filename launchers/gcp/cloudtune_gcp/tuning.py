"""Compile a job spec with a `sweep:` into a Vertex AI `HyperparameterTuningJob` Plan (the REST body of
projects.locations.hyperparameterTuningJobs.create: `{"parent": ..., "hyperparameterTuningJob": {...}}`).

Built around the job's own CustomJob (`cloudtune_gcp.request`): its `jobSpec` is the tuning job's `trialJobSpec`, so
each trial is the same job (image, start path, /gcs mounts, scheduling and restarts). Vertex AI passes a trial's values
as `--<parameterId>=<value>` arguments appended to the container's arguments, which are cloudtune-run's here; the
parameter ids are `cloudtune.kit.sweep.wire_name(path)`. Each trial's baseOutputDirectory is the job's with the trial
id appended (AIP_MODEL_DIR = <base>/<trial>/model), so trials never share checkpoints. The metric reaches Vizier
through the hypertune file the recipe's reporter writes (`cloudtune.contracts.metrics`).

Pure and offline: no google-cloud import, nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.kit import sweep as kit_sweep
from cloudtune.spec.sweep import ParameterRange, SweepSpec, format_value
from cloudtune_gcp import request as training

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec
    from cloudtune_gcp.settings import GcpSettings

# StudySpec.Algorithm: ALGORITHM_UNSPECIFIED is Vertex AI Vizier's default Bayesian optimization
ALGORITHM = {"bayesian": "ALGORITHM_UNSPECIFIED", "random": "RANDOM_SEARCH", "grid": "GRID_SEARCH"}
GOAL = {"minimize": "MINIMIZE", "maximize": "MAXIMIZE"}


def compile_plan(spec: "JobSpec", settings: "GcpSettings", *, suffix: str, bundle: "Bundle | None", home: Path,
                 lock_dir: Path | None = None) -> "Plan":
    """A CustomJob Plan, or for a spec with a `sweep:` a HyperparameterTuningJob Plan whose trials are that job."""
    trial = training.compile_plan(spec, settings, suffix=suffix, bundle=bundle, home=home, lock_dir=lock_dir)
    sweep = getattr(spec, "sweep", None)
    if sweep is None:
        return trial
    notes = list(trial.notes)
    custom = trial.request["customJob"]
    tuning: dict[str, Any] = {
        "displayName": custom["displayName"],
        "studySpec": study_spec(sweep, notes),
        "maxTrialCount": sweep.max_trials,
        "parallelTrialCount": sweep.parallel_trials,
        "maxFailedTrialCount": failed_trials(sweep, notes),
        "trialJobSpec": custom["jobSpec"],
        "labels": custom["labels"],
    }
    if "encryptionSpec" in custom:
        tuning["encryptionSpec"] = custom["encryptionSpec"]
    return kit_sweep.sweep_plan(trial, sweep, spec.resources.max_runtime_seconds,
                                {"parent": trial.request["parent"], "hyperparameterTuningJob": tuning}, notes, "each trial's outputs: <baseOutputDirectory>/<trial id>/ (model, checkpoints, "
                                "logs); the best trial's model is the sweep's model")


def failed_trials(sweep: SweepSpec, notes: list[str]) -> int:
    """maxFailedTrialCount. The spec's 0 means never stop for failures; Vertex AI reads 0 as "Vertex decides", so it
    is sent as max_trials (the sweep cannot fail more trials than it runs)."""
    if sweep.max_failed_trials == 0:
        notes.append("max_failed_trials 0 (never stop for failures): sent as maxFailedTrialCount = max_trials, since "
                     "Vertex AI reads 0 as its own default")
        return sweep.max_trials
    return sweep.max_failed_trials


def study_spec(sweep: SweepSpec, notes: list[str]) -> dict[str, Any]:
    """StudySpec: the metric with its goal, the parameters, the algorithm, the last measurement as the trial's value
    (the reporter's last report is the objective), and the median stopping rule for `early_stopping: auto`."""
    study: dict[str, Any] = {
        "metrics": [{"metricId": sweep.objective.metric, "goal": GOAL[sweep.objective.direction]}],
        "parameters": [parameter_spec(path, rng, sweep.algorithm == "grid")
                       for path, rng in sorted(sweep.ranges().items())],
        "algorithm": ALGORITHM[sweep.algorithm],
        "measurementSelectionType": "LAST_MEASUREMENT",
    }
    if sweep.early_stopping == "auto":
        # Vizier's median automated stopping: a trial whose intermediate objective is worse than the median of
        # earlier trials at the same step stops; steps, not elapsed time, as the reporter reports them
        study["medianAutomatedStoppingSpec"] = {"useElapsedDuration": False}
        notes.append("early_stopping auto: Vertex AI's median automated stopping, on the intermediate values the "
                     "recipe reports at each evaluation (hyperparameters.eval_every)")
    return study


def parameter_spec(path: str, rng: ParameterRange, grid: bool) -> dict[str, Any]:
    """One ParameterSpec. Numbers in a choice are a discreteValueSpec (values in increasing order, as Vertex AI
    requires); any other choice is a categoricalValueSpec of the values' text. Integer bounds are int64, which
    proto3 JSON writes as strings."""
    spec: dict[str, Any] = {"parameterId": kit_sweep.wire_name(path)}
    if rng.choice is not None:
        if kit_sweep.numbers(rng):
            spec["discreteValueSpec"] = {"values": sorted(float(v) for v in rng.choice)}
            spec["scaleType"] = "UNIT_LINEAR_SCALE"
        else:
            spec["categoricalValueSpec"] = {"values": [format_value(v) for v in rng.choice]}
        return spec
    low, high = rng.bounds  # type: ignore[misc]
    scale = "UNIT_LOG_SCALE" if rng.log_scale else "UNIT_LINEAR_SCALE"
    if rng.int is not None:
        spec["integerValueSpec"] = {"minValue": str(int(low)), "maxValue": str(int(high))}
    elif grid:  # the spec model refuses real ranges in a grid; kept as a guard for a model built in code
        raise UnsupportedSpec(f"sweep.parameters.{path}: Vertex AI's grid search takes no real-number range",
                              fix="give it as {choice: [...]}, or use algorithm: random or bayesian")
    else:
        spec["doubleValueSpec"] = {"minValue": float(low), "maxValue": float(high)}
    spec["scaleType"] = scale
    return spec
