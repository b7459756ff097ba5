"""SageMaker sweeps: golden CreateHyperParameterTuningJob requests, checked against botocore's service model, and
what a tuning job cannot express, refused at plan time.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/aws/test_sweep_plan.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import InvalidInput
from tests.aws.conftest import SUFFIX, settings, spec_from, write_data
from tests.aws.test_plan import walk
from tests.golden import assert_golden
from tests.sweep_scenarios import GOLDEN, assert_portable, normalise, sweeps

from cloudtune_aws.launcher import AwsLauncher

S3_IN = {"train": "s3://datasets/sft/train.jsonl", "eval": "s3://datasets/sft/eval/"}
ACCEL = {"single": "L4:1", "multi_node": "H100:8", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1.2"}
NAMES = sorted(sweeps(Path("/x"), S3_IN, ACCEL))


def build(name: str, tmp_path: Path, **changes: Any):
    write_data(tmp_path)
    data = sweeps(tmp_path, S3_IN, ACCEL)[name]
    data = {**data, "sweep": {**data["sweep"], **changes}}
    spec = spec_from(data, tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        (tmp_path / "user-bundles").mkdir(exist_ok=True)
        bundle = build_bundle(Path(spec.code), dest=tmp_path / "user-bundles")
    return AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX, bundle=bundle)


def _shape():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateHyperParameterTuningJob").input_shape


@pytest.mark.parametrize("name", NAMES)
def test_golden_tuning_request(name: str, tmp_path: Path) -> None:
    plan = build(name, tmp_path)
    assert_portable(plan, tmp_path)
    assert_golden(GOLDEN / "aws" / f"sweep-{name}.json", normalise(plan, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_tuning_request_fits_the_service_model(name: str, tmp_path: Path) -> None:
    from botocore.validate import validate_parameters

    pytest.importorskip("regex")
    request = build(name, tmp_path).request
    validate_parameters(request, _shape())
    problems: list[str] = []
    walk(_shape(), request, "CreateHyperParameterTuningJob", problems)
    assert problems == []
    assert len(request["HyperParameterTuningJobName"]) <= 32  # botocore's model says so but does not check it


def test_trial_is_the_training_job(tmp_path: Path) -> None:
    """The definition is the CreateTrainingJob request of the same spec: image, channels, role, output, stopping,
    checkpoints and its hyperparameters (the runtime job and the script-mode start) as static ones."""
    plan = build("multi-node-2x8-random", tmp_path)
    write_data(tmp_path)
    data = {k: v for k, v in sweeps(tmp_path, S3_IN, ACCEL)["multi-node-2x8-random"].items() if k != "sweep"}
    job = AwsLauncher(home=tmp_path / "home").plan(spec_from(data, tmp_path), settings(), suffix=SUFFIX).request
    trial = plan.request["TrainingJobDefinition"]
    for key in ("RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig", "StoppingCondition", "CheckpointConfig"):
        assert trial[key] == job[key], key
    assert trial["ResourceConfig"]["InstanceCount"] == 2
    assert trial["AlgorithmSpecification"]["TrainingImage"] == job["AlgorithmSpecification"]["TrainingImage"]
    static = trial["StaticHyperParameters"]
    assert static["sagemaker_program"] == job["HyperParameters"]["sagemaker_program"]  # trials start by script mode
    assert json.loads(static["cloudtune_job"])["train"] == json.loads(job["HyperParameters"]["cloudtune_job"])["train"]


def test_objective_regex_reads_the_reporters_metric_line(tmp_path: Path) -> None:
    from cloudtune.contracts.metrics import metric_line

    trial = build("lora-bayesian", tmp_path).request["TrainingJobDefinition"]
    regex = next(d["Regex"] for d in trial["AlgorithmSpecification"]["MetricDefinitions"] if d["Name"] == "eval_loss")
    found = re.search(regex, "2026-12-07 " + metric_line("eval_loss", 2.0100, 40) + "\n")
    assert found is not None and float(found.group(1)) == pytest.approx(2.01)
    assert re.search(regex, metric_line("perplexity", 7.4, 40)) is None


def test_ranges_are_strings_with_their_scaling(tmp_path: Path) -> None:
    ranges = build("lora-bayesian", tmp_path).request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "hyperparameters__learning_rate", "MinValue": "5e-05",
                                                    "MaxValue": "0.005", "ScalingType": "Logarithmic"}]
    assert ranges["IntegerParameterRanges"] == [{"Name": "hyperparameters__batch_size", "MinValue": "4",
                                                 "MaxValue": "16", "ScalingType": "Linear"}]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "lora__r", "Values": ["8", "16", "32"]}]


def test_grid_takes_categorical_ranges_and_every_combination(tmp_path: Path) -> None:
    config = build("grid", tmp_path).request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Grid" and "MaxNumberOfTrainingJobs" not in config["ResourceLimits"]
    assert set(config["ParameterRanges"]) == {"CategoricalParameterRanges"}
    assert {"Name": "hyperparameters__batch_size", "Values": ["4", "5"]} in config["ParameterRanges"]["CategoricalParameterRanges"]
    assert config["TrainingJobEarlyStoppingType"] == "Off"


def test_custom_image_trial_starts_through_the_image_entrypoint(tmp_path: Path) -> None:
    plan = build("command-custom-image", tmp_path)
    algorithm = plan.request["TrainingJobDefinition"]["AlgorithmSpecification"]
    assert "ContainerEntrypoint" not in algorithm and "ContainerArguments" not in algorithm
    assert any("ENTRYPOINT, which must be cloudtune-run" in n for n in plan.notes)


def test_long_names_are_shortened_to_32_characters(tmp_path: Path) -> None:
    write_data(tmp_path)
    data = {**sweeps(tmp_path, S3_IN, ACCEL)["lora-bayesian"], "name": "a-very-long-sweep-name-for-sagemaker"}
    plan = AwsLauncher(home=tmp_path / "home").plan(spec_from(data, tmp_path), settings(), suffix=SUFFIX)
    name = plan.request["HyperParameterTuningJobName"]
    assert name == "a-very-long-swe-260101000000abcd" and len(name) == 32 and plan.job_name == name
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name)


@pytest.mark.parametrize(("name", "changes", "needle"), [
    ("grid", {"max_trials": 3}, "the grid has 8 combinations"),
    ("lora-bayesian", {"parameters": {"lora.r": {"choice": list(range(1, 41))}}}, "at most 30"),
])
def test_refusals(name: str, changes: dict[str, Any], needle: str, tmp_path: Path) -> None:
    """The grid is refused for every provider when the spec loads (SpecError); the 30 choices are SageMaker's own
    limit, refused when the request is compiled (UnsupportedSpec): both are InvalidInput, exit 2."""
    with pytest.raises(InvalidInput) as err:
        build(name, tmp_path, **changes)
    assert needle in str(err.value) and ("To fix:" in str(err.value) or err.value.fix)  # SpecError: in its text
