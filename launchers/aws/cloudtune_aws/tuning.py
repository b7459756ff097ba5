"""Compile a job spec with a `sweep:` into a SageMaker `CreateHyperParameterTuningJob` Plan.

Built around the job's own `CreateTrainingJob` request (`cloudtune_aws.request`): the request's image, channels,
role, output, checkpoints, stopping condition, spot and retry settings become the tuning job's
`TrainingJobDefinition`, so each trial is the same job. Pure and offline, like the training-job compiler.

What changes for a trial (SageMaker API reference, HyperParameterTrainingJobDefinition and
HyperParameterAlgorithmSpecification):
- the training request's HyperParameters become StaticHyperParameters; the tuned values arrive beside them in
  /opt/ml/input/config/hyperparameters.json under `cloudtune.kit.sweep.wire_name(path)`;
- a trial takes no ContainerEntrypoint: on the stock image it starts as every cloudtune job there does, through the
  training toolkit's script mode (`sagemaker_program`), so nothing changes; a custom `image:` starts through the
  image's own ENTRYPOINT, which must be cloudtune-run (cloudtune's images are);
- the objective is a metric of `MetricDefinitions` (the recipe's log-line regexes, `cloudtune.contracts.logfmt`);
- the definition has no TensorBoardOutputConfig and at most 48 Environment entries; tags go on the tuning job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts.metrics import metric_regex
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit import sweep as kit_sweep
from cloudtune.spec.sweep import ParameterRange, SweepSpec, format_value
from cloudtune_aws import request as training

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec
    from cloudtune_aws.settings import AwsSettings

NAME_MAX = 32  # HyperParameterTuningJobName: 1-32 (botocore's model states it; botocore does not check max lengths)
MAX_PARAMETERS = 30  # ParameterRanges: at most 30 ranges of each type, and at most 30 hyperparameters searched
MAX_CATEGORICAL_VALUES = 30  # CategoricalParameterRange.Values
ENV_MAX_ENTRIES = 48  # HyperParameterTrainingJobDefinition.Environment
STRATEGY = {"bayesian": "Bayesian", "random": "Random", "grid": "Grid"}
GOAL = {"minimize": "Minimize", "maximize": "Maximize"}
# The definition's members (HyperParameterTrainingJobDefinition) a CreateTrainingJob request also has
COPIED = ("RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig", "StoppingCondition", "VpcConfig",
          "EnableNetworkIsolation", "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy", "Environment")


def compile_plan(spec: "JobSpec", settings: "AwsSettings", *, suffix: str, bundle: "Bundle | None", home: Path,
                 lock_dir: Path | None = None) -> "Plan":
    """A CreateTrainingJob Plan, or for a spec with a `sweep:` a CreateHyperParameterTuningJob Plan whose trials are
    that training job (see the module docstring). Pure and offline."""
    trial = training.compile_plan(spec, settings, suffix=suffix, bundle=bundle, home=home, lock_dir=lock_dir)
    sweep = getattr(spec, "sweep", None)
    if sweep is None:
        return trial
    notes = list(trial.notes)
    name = kit_sweep.short_name(spec.name, suffix, NAME_MAX, "SageMaker tuning-job names", notes)
    config = tuning_config(sweep, notes)
    definition = trial_definition(spec, trial.request, sweep, notes)
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
        "Tags": trial.request["Tags"],
    }
    return kit_sweep.sweep_plan(trial, sweep, spec.resources.max_runtime_seconds, request, notes,
                                "each trial's model: <S3OutputPath>/<trial's training job>/output/model.tar.gz; the "
                                "best trial's is the sweep's model", job_name=name)


def tuning_config(sweep: SweepSpec, notes: list[str]) -> dict[str, Any]:
    """HyperParameterTuningJobConfig: strategy, objective, ranges, limits and early stopping."""
    strategy = STRATEGY[sweep.algorithm]
    limits: dict[str, int] = {"MaxNumberOfTrainingJobs": sweep.max_trials, "MaxParallelTrainingJobs": sweep.parallel_trials}
    early = "Auto" if sweep.early_stopping == "auto" else "Off"
    if strategy == "Grid":
        size = sweep.grid_size()
        if size > sweep.max_trials:
            raise UnsupportedSpec(f"sweep: the grid has {size} combinations and max_trials is {sweep.max_trials}; "
                                  "SageMaker's grid search runs every combination",
                                  fix=f"set max_trials: {size}, give fewer values, or use algorithm: random")
        del limits["MaxNumberOfTrainingJobs"]  # grid search runs every combination; SageMaker takes no count for it
        if early == "Auto":
            early = "Off"
            notes.append("early_stopping auto: SageMaker stops trials early for Bayesian and Random search only; "
                         "this grid search runs every trial to its end")
    if sweep.max_failed_trials:
        notes.append(f"max_failed_trials {sweep.max_failed_trials}: SageMaker has no such limit; the tuning job runs "
                     "its trials whatever fails (a training job that fails is not retried by the tuner)")
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": GOAL[sweep.objective.direction],
                                             "MetricName": sweep.objective.metric},
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(sweep, strategy == "Grid"),
        "TrainingJobEarlyStoppingType": early,
    }
    return config


def parameter_ranges(sweep: SweepSpec, grid: bool) -> dict[str, list[dict[str, Any]]]:
    """ParameterRanges: values as strings, with their ScalingType. A grid takes categorical ranges only: an int range
    becomes the list of its whole numbers."""
    ranges = sweep.ranges()
    if len(ranges) > MAX_PARAMETERS:
        raise UnsupportedSpec(f"sweep: {len(ranges)} parameters; SageMaker tunes at most {MAX_PARAMETERS}",
                              fix=f"sweep at most {MAX_PARAMETERS} options")
    out: dict[str, list[dict[str, Any]]] = {"IntegerParameterRanges": [], "ContinuousParameterRanges": [],
                                            "CategoricalParameterRanges": []}
    for path, rng in sorted(ranges.items()):
        name = kit_sweep.wire_name(path)
        if grid or rng.choice is not None:
            values = (kit_sweep.grid_values(path, rng, MAX_CATEGORICAL_VALUES, "SageMaker") if grid
                      else _choices(path, rng))
            out["CategoricalParameterRanges"].append({"Name": name, "Values": [_text(v) for v in values]})
            continue
        low, high = rng.bounds  # type: ignore[misc]
        scaling = "Logarithmic" if rng.log_scale else "Linear"
        if rng.int is not None:
            out["IntegerParameterRanges"].append({"Name": name, "MinValue": str(int(low)), "MaxValue": str(int(high)),
                                                  "ScalingType": scaling})
        else:
            out["ContinuousParameterRanges"].append({"Name": name, "MinValue": _text(float(low)),
                                                     "MaxValue": _text(float(high)), "ScalingType": scaling})
    return {key: value for key, value in out.items() if value}


def _choices(path: str, rng: ParameterRange) -> list[Any]:
    values = list(rng.choice or ())
    if len(values) > MAX_CATEGORICAL_VALUES:
        raise UnsupportedSpec(f"sweep.parameters.{path}: {len(values)} choices; SageMaker's categorical ranges take "
                              f"at most {MAX_CATEGORICAL_VALUES}",
                              fix=kit_sweep.choices_fix(rng, MAX_CATEGORICAL_VALUES))
    return values


def _text(value: Any) -> str:
    """A range value as SageMaker's string: the form cloudtune-run reads back (`cloudtune.spec.sweep.format_value`)."""
    return format_value(value)


def trial_definition(spec: "JobSpec", request: dict[str, Any], sweep: SweepSpec, notes: list[str]) -> dict[str, Any]:
    """HyperParameterTrainingJobDefinition from the CreateTrainingJob `request`."""
    algorithm = dict(request["AlgorithmSpecification"])
    algorithm["MetricDefinitions"] = objective_definitions(algorithm.get("MetricDefinitions", []), sweep.objective.metric)
    if "ContainerEntrypoint" in algorithm:
        _custom_image_start(spec, request, notes)
        algorithm.pop("ContainerEntrypoint")
        algorithm.pop("ContainerArguments", None)
    definition: dict[str, Any] = {
        "DefinitionName": "trial",
        "StaticHyperParameters": dict(request["HyperParameters"]),
        "AlgorithmSpecification": algorithm,
    }
    definition.update({key: request[key] for key in COPIED if key in request})
    if len(definition.get("Environment", {})) > ENV_MAX_ENTRIES:
        raise UnsupportedSpec(f"env: {len(definition['Environment'])} variables; a SageMaker tuning job's trials take "
                              f"at most {ENV_MAX_ENTRIES}", fix=f"set at most {ENV_MAX_ENTRIES} env variables")
    if "CheckpointConfig" in definition:
        notes.append("trials share the CheckpointConfig S3 prefix; each trial keeps its checkpoints under its own "
                     "training job's name there, so no trial resumes from another's")
    if "TensorBoardOutputConfig" in request:
        notes.append("tensorboard: a tuning job's trials take no TensorBoardOutputConfig; trial metrics are in "
                     "CloudWatch (MetricDefinitions) and `cloudtune status`")
    clash = sorted(set(definition["StaticHyperParameters"]) & {kit_sweep.wire_name(p) for p in sweep.ranges()})
    if clash:
        raise UnsupportedSpec(f"sweep parameter {clash[0]} is also a static hyperparameter of the job",
                              fix="rename the swept option")
    return definition


def objective_definitions(definitions: list[dict[str, str]], metric: str) -> list[dict[str, str]]:
    """The job's MetricDefinitions with the objective read from the metric reporter's lines
    (`cloudtune.contracts.metrics`: `[cloudtune] metric eval_loss=2.01 step=40`, one per evaluation, so early stopping
    sees intermediate values and the last one is the objective), in place of any other definition of that name."""
    kept = [d for d in definitions if d["Name"] != metric]
    return [*kept, {"Name": metric, "Regex": metric_regex(metric)}]


def _custom_image_start(spec: "JobSpec", request: dict[str, Any], notes: list[str]) -> None:
    """A custom image's trial cannot start through ContainerEntrypoint: it starts through the image's ENTRYPOINT."""
    value = request["HyperParameters"].get(training.sm.JOB_KEY, "")
    if not value.lstrip().startswith("{"):
        raise UnsupportedSpec(
            "the runtime job is over SageMaker's hyperparameter limit and travels in the code bundle, which a tuning "
            "trial on a custom image cannot unpack (tuning jobs take no ContainerEntrypoint)",
            fix="leave `image:` unset (the stock image starts trials through script mode), or shorten env/the spec")
    notes.append(f"image {spec.image}: a tuning job's trials take no ContainerEntrypoint, so each trial starts through "
                 "the image's own ENTRYPOINT, which must be cloudtune-run (cloudtune's images are: containers/gpu); "
                 "the image's installed cloudtune runs the trial, not the carried wheel, and must be one that applies "
                 "a trial's values (cloudtune.runtime.trial)")
