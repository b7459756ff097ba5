"""Vertex AI sweeps: golden HyperparameterTuningJob REST bodies, each parsed by the SDK's own
`aiplatform_v1.HyperparameterTuningJob` (unknown fields refused), and how the spec maps to the study.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/gcp/test_sweep_plan.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gcp.conftest import SUFFIX, settings, spec_from, write_data
from tests.golden import assert_golden
from tests.sweep_scenarios import GOLDEN, assert_portable, normalise, sweeps

from cloudtune_gcp.launcher import GcpLauncher

GS_IN = {"train": "gs://datasets/sft/train.jsonl", "eval": "gs://datasets/sft/eval.jsonl"}
ACCEL = {"single": "L4:1", "multi_node": "H100:8",
         "image": "us-central1-docker.pkg.dev/ml-proj/cloudtune/cloudtune-gpu:0.1.0"}
NAMES = sorted(sweeps(Path("/x"), GS_IN, ACCEL))


def build(name: str, tmp_path: Path, **changes: Any):
    write_data(tmp_path)
    data = sweeps(tmp_path, GS_IN, ACCEL)[name]
    spec = spec_from({**data, "sweep": {**data["sweep"], **changes}}, tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        bundle = build_bundle(Path(spec.code))
    return GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX, bundle=bundle)


def parse(request: dict[str, Any]):
    from google.cloud.aiplatform_v1.types import CreateHyperparameterTuningJobRequest, HyperparameterTuningJob

    job = HyperparameterTuningJob.from_json(json.dumps(request["hyperparameterTuningJob"]), ignore_unknown_fields=False)
    CreateHyperparameterTuningJobRequest(parent=request["parent"], hyperparameter_tuning_job=job)
    return job


@pytest.mark.parametrize("name", NAMES)
def test_golden_tuning_job(name: str, tmp_path: Path) -> None:
    plan = build(name, tmp_path)
    assert_portable(plan, tmp_path)
    assert_golden(GOLDEN / "gcp" / f"sweep-{name}.json", normalise(plan, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_tuning_job_parses_as_the_sdk_type(name: str, tmp_path: Path) -> None:
    from google.cloud.aiplatform_v1.types import StudySpec

    plan = build(name, tmp_path)
    job = parse(plan.request)
    spec = spec_from(sweeps(tmp_path, GS_IN, ACCEL)[name], tmp_path)
    sweep = spec.sweep
    assert job.max_trial_count == sweep.max_trials and job.parallel_trial_count == sweep.parallel_trials
    assert [p.parameter_id for p in job.study_spec.parameters] == sorted(p.replace(".", "__") for p in sweep.ranges())
    assert job.study_spec.metrics[0].metric_id == sweep.objective.metric
    assert job.study_spec.metrics[0].goal.name == sweep.objective.direction.upper()
    assert job.study_spec.measurement_selection_type == StudySpec.MeasurementSelectionType.LAST_MEASUREMENT
    pools = job.trial_job_spec.worker_pool_specs
    assert sum(p.replica_count for p in pools) == spec.resources.nodes


def test_trial_job_spec_is_the_custom_jobs(tmp_path: Path) -> None:
    """The trial is the CustomJob of the same spec: same pools, image, command, arguments and output directory."""
    plan = build("multi-node-2x8-random", tmp_path)
    data = {k: v for k, v in sweeps(tmp_path, GS_IN, ACCEL)["multi-node-2x8-random"].items() if k != "sweep"}
    job = GcpLauncher(home=tmp_path / "home").plan(spec_from(data, tmp_path), settings(), suffix=SUFFIX).request
    trial = plan.request["hyperparameterTuningJob"]["trialJobSpec"]
    pools = json.loads(json.dumps(trial["workerPoolSpecs"]))
    for pool in pools:  # the runtime job also carries the sweep section, which the trial's values are read with
        args = pool["containerSpec"]["args"]
        runtime_job = json.loads(args[5])
        assert runtime_job.pop("sweep") == plan.spec["sweep"]
        args[5] = json.dumps(runtime_job, sort_keys=True)
    assert pools == job["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert trial["baseOutputDirectory"] == job["customJob"]["jobSpec"]["baseOutputDirectory"]
    assert [p["machineSpec"]["acceleratorCount"] for p in trial["workerPoolSpecs"]] == [8, 8]


def test_parameter_specs(tmp_path: Path) -> None:
    study = build("lora-bayesian", tmp_path).request["hyperparameterTuningJob"]["studySpec"]
    assert study["algorithm"] == "ALGORITHM_UNSPECIFIED"  # Vizier's Bayesian optimization
    assert study["parameters"] == [
        {"parameterId": "hyperparameters__batch_size", "integerValueSpec": {"minValue": "4", "maxValue": "16"},
         "scaleType": "UNIT_LINEAR_SCALE"},
        {"parameterId": "hyperparameters__learning_rate", "doubleValueSpec": {"minValue": 5e-05, "maxValue": 0.005},
         "scaleType": "UNIT_LOG_SCALE"},
        {"parameterId": "lora__r", "discreteValueSpec": {"values": [8.0, 16.0, 32.0]}, "scaleType": "UNIT_LINEAR_SCALE"},
    ]
    assert study["medianAutomatedStoppingSpec"] == {"useElapsedDuration": False}
    command = build("command-custom-image", tmp_path).request["hyperparameterTuningJob"]["studySpec"]["parameters"]
    assert {"parameterId": "optimizer", "categoricalValueSpec": {"values": ["adamw", "sgd"]}} in command


def test_never_stop_for_failures_is_max_trials(tmp_path: Path) -> None:
    plan = build("multi-node-2x8-random", tmp_path)
    tuning = plan.request["hyperparameterTuningJob"]
    assert tuning["maxFailedTrialCount"] == tuning["maxTrialCount"] == 8  # 0 would mean "Vertex AI decides"
    assert "medianAutomatedStoppingSpec" not in tuning["studySpec"]  # early_stopping: off
    assert build("grid", tmp_path).request["hyperparameterTuningJob"]["studySpec"]["algorithm"] == "GRID_SEARCH"


def test_trial_values_reach_cloudtune_run_as_arguments(tmp_path: Path) -> None:
    """Vertex AI appends `--<parameterId>=<value>` to the container's arguments: after the bootstrap's four, they are
    cloudtune-run's, which the spec's own parser reads back to the option paths with their types."""
    from cloudtune.spec.sweep import values_from_arguments

    plan = build("lora-bayesian", tmp_path)
    container = plan.request["hyperparameterTuningJob"]["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    appended = ["--hyperparameters__learning_rate=0.0003", "--lora__r=16.0", "--hyperparameters__batch_size=8.0"]
    args = [*container["args"], *appended]
    spec = spec_from(sweeps(tmp_path, GS_IN, ACCEL)["lora-bayesian"], tmp_path)
    assert values_from_arguments(args[4:], spec.sweep) == {
        "hyperparameters.learning_rate": 0.0003, "lora.r": 16, "hyperparameters.batch_size": 8}
