"""A cloud sweep's trial inside the container: the values each tuning service passes, in the form its compiled request
makes it pass them, reach the runtime job as typed options, identically on every rank and node of a multi-node
trial (cloudtune.runtime.trial through cloudtune-run's argument parsing and the contract readers)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from cloudtune.contracts import sagemaker as sm, vertex as vx
from cloudtune.errors import JobInputError
from cloudtune.entrypoint import parse_args
from cloudtune.runtime.context import detect
from cloudtune.spec import validate_spec

SUFFIX = "20260101-000000-abcd"
SWEEP = {"parameters": {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "lora.r": {"choice": [8, 16, 32]},
                        "batch_size": {"int": [4, 16]}}, "max_trials": 4}
CHOSEN = {"hyperparameters.learning_rate": 0.0003, "lora.r": 16, "hyperparameters.batch_size": 8}


def _spec(tmp_path: Path, inputs: dict[str, str], nodes: int = 1):
    return validate_spec({"name": "trial", "resources": {"accelerator": "A100-80GB:8", "nodes": nodes},
                          "inputs": inputs, "train": {"model": "gpt2", "lora": {}, "data": {"eval": "eval"},
                                                      "hyperparameters": {"eval_every": 10}},
                          "sweep": SWEEP}, base_dir=tmp_path)


def _applied(job: dict) -> None:
    assert job["trial"] == CHOSEN
    assert job["train"]["hyperparameters"]["learning_rate"] == 0.0003
    assert job["train"]["hyperparameters"]["batch_size"] == 8 and job["train"]["lora"]["r"] == 16


def test_sagemaker_trial_reads_its_hyperparameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SageMaker writes the static hyperparameters and the tuned ones (text) into hyperparameters.json on every
    host; each trial keeps its checkpoints under its own training-job name."""
    from tests.aws.conftest import settings

    from cloudtune_aws.launcher import AwsLauncher

    spec = _spec(tmp_path, {"train": "s3://d/train.jsonl", "eval": "s3://d/eval/"}, nodes=2)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    definition = plan.request["TrainingJobDefinition"]
    tuned = {"hyperparameters__learning_rate": "0.0003", "lora__r": "16", "hyperparameters__batch_size": "8"}
    jobs = []
    for host in ("algo-1", "algo-2"):
        root = tmp_path / host
        config = root / sm.CONFIG_DIR.lstrip("/")
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(json.dumps({
            **definition["StaticHyperParameters"], **tuned, "_tuning_objective_metric": "eval_loss"}))
        (config / "resourceconfig.json").write_text(json.dumps(sm.resource_config(host, ["algo-1", "algo-2"], "ml.p4de.24xlarge")))
        env = {"CLOUDTUNE_FS_ROOT": str(root), sm.JOB_NAME_VAR: "trial-2601-003-0a1b2c3d", "SM_TRAINING_ENV": "{}"}
        monkeypatch.setenv("CLOUDTUNE_FS_ROOT", str(root))
        ctx = detect(parse_args([]), env)
        assert ctx.provider == "aws" and ctx.num_nodes == 2
        assert ctx.checkpoint_dir == root / "opt/ml/checkpoints/trial-2601-003-0a1b2c3d"
        _applied(ctx.job)
        jobs.append(ctx.job)
    assert jobs[0] == jobs[1]  # both nodes, the same values


def test_vertex_trial_reads_its_arguments_on_every_replica(tmp_path: Path) -> None:
    """Vertex AI appends `--<parameterId>=<value>` (integers as doubles) to every replica's arguments."""
    from tests.gcp.conftest import settings

    from cloudtune_gcp.launcher import GcpLauncher

    spec = _spec(tmp_path, {"train": "gs://d/train.jsonl", "eval": "gs://d/eval/"}, nodes=3)
    tuning = GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX).request["hyperparameterTuningJob"]
    pools = tuning["trialJobSpec"]["workerPoolSpecs"]
    appended = ["--hyperparameters__batch_size=8.0", "--hyperparameters__learning_rate=0.0003", "--lora__r=16.0"]
    base = tuning["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"] + "/7"  # the trial id appended
    jobs = []
    for rank in range(3):
        env = {vx.JOB_ID_VAR: "123", vx.CLUSTER_SPEC_VAR: vx.cluster_spec(3, rank),
               "CLOUDTUNE_FS_ROOT": str(tmp_path / "root"), **vx.output_dirs(base)}
        args = [*pools[min(rank, 1)]["containerSpec"]["args"][4:], *appended]  # after the bootstrap's four
        ctx = detect(parse_args(args), env)
        assert ctx.node_rank == rank
        _applied(ctx.job)
        assert type(ctx.job["train"]["lora"]["r"]) is int
        jobs.append(ctx.job)
    assert jobs[0] == jobs[1] == jobs[2]


def test_azure_trial_reads_its_search_space_arguments(tmp_path: Path) -> None:
    """Azure ML substitutes `${{search_space.NAME}}` in the trial command; cloudtune-run reads the result."""
    from tests.azure.planning import DS_IN, settings

    from cloudtune_azure.launcher import AzureLauncher

    spec = _spec(tmp_path, DS_IN).model_copy(update={"sweep": _spec(tmp_path, DS_IN).sweep.model_copy(
        update={"algorithm": "random"})})
    request = AzureLauncher(home=tmp_path / "home").plan(spec, settings(compute="gpu-cluster"), suffix=SUFFIX).request
    command = request["trial"]["command"]
    for name, value in {"hyperparameters__learning_rate": "0.0003", "lora__r": "16",
                        "hyperparameters__batch_size": "8.0"}.items():  # quniform draws come back as floats
        command = command.replace(f"${{{{search_space.{name}}}}}", value)
    words = shlex.split(command)
    args = words[words.index("cloudtune-bootstrap") + 5:]  # sh -c BOOTSTRAP cloudtune-bootstrap $1..$4, then ours
    # Azure ML's own substitution of the inputs and outputs (mounted paths)
    args = [re.sub(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}", lambda m: str(tmp_path / m.group(1) / m.group(2)), a)
            for a in args]
    ctx = detect(parse_args(args), {"AZUREML_RUN_ID": "trial_3", "MLFLOW_TRACKING_URI": "azureml://x"})
    assert ctx.provider == "azure"
    _applied(ctx.job)


def test_values_outside_the_sweep_are_refused(tmp_path: Path) -> None:
    from cloudtune.runtime.trial import apply

    spec = _spec(tmp_path, {"train": "s3://d/t.jsonl", "eval": "s3://d/e/"})
    job = {"train": spec.train.model_dump(mode="json"), "sweep": spec.sweep.model_dump(mode="json")}
    with pytest.raises(JobInputError, match="names no parameter"):
        apply(job, {"hyperparameters__weight_decay": "0.1"})
    with pytest.raises(JobInputError, match="To fix"):
        apply(job, {"lora__r": "12"})  # not one of the choices
    assert apply({"train": job["train"]}, {"lora__r": "16"}) == {"train": job["train"]}  # no sweep: nothing applied


def test_command_trial_gets_arguments_and_variables(tmp_path: Path) -> None:
    from cloudtune.runtime.trial import apply

    (tmp_path / "src").mkdir()
    spec = validate_spec({"name": "cmd", "command": "python train.py", "code": "src",
                          "sweep": {"parameters": {"lr": {"loguniform": [1e-5, 1e-3]}},
                                    "objective": {"metric": "val_loss"}}}, base_dir=tmp_path)
    job = {"command": spec.command, "env": {}, "sweep": spec.sweep.model_dump(mode="json")}
    out = apply(job, {"lr": "0.0001"})
    assert out["command"] == "python train.py --lr=0.0001" and out["env"] == {"CLOUDTUNE_SWEEP_LR": "0.0001"}


def test_trial_arguments_without_a_sweep_are_a_contract_error(tmp_path: Path) -> None:
    from cloudtune.runtime.context import ContractError

    job = json.dumps({"name": "x", "inputs": {}, "command": "true"})
    with pytest.raises(ContractError, match="unexpected arguments --lora__r"):
        detect(parse_args(["--job-json", job, "--lora__r=16"]), {"CLOUDTUNE_FS_ROOT": str(tmp_path)})


def test_azure_trial_values_and_objective_round_trip_through_mlflow(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What a trial's container logs to MLflow (its values as params, each evaluation's metrics) is what the Azure
    launcher reads back as the trial's typed values and objective (cloudtune_azure.sweep.trials_of)."""
    from types import SimpleNamespace

    mlflow = pytest.importorskip("mlflow")
    from cloudtune.train.metricreport import MetricReporter, log_trial_values
    from cloudtune_azure.mlflowruns import RunFigures
    from cloudtune_azure.sweep import trials_of

    assert not log_trial_values(CHOSEN, {})  # no tracking URI: nothing to log to
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # through the environment, as Azure ML sets it in the job
    mlflow.set_experiment("trial")
    assert log_trial_values(CHOSEN)
    MetricReporter(mlflow=True).report({"eval_loss": 1.5}, 10)
    MetricReporter(mlflow=True).report({"eval_loss": 1.25}, 20)
    run = mlflow.active_run()
    mlflow.end_run()
    logged = mlflow.MlflowClient(uri).get_run(run.info.run_id).data
    assert logged.params == {"hyperparameters.learning_rate": "0.0003", "lora.r": "16", "hyperparameters.batch_size": "8"}
    sweep = _spec(tmp_path, {"train": "s3://d/t.jsonl", "eval": "s3://d/e/"}).sweep.model_dump(mode="json")
    [trial] = trials_of([SimpleNamespace(name="sweep_2", status="Completed")],
                        {"sweep_2": RunFigures(dict(logged.params), dict(logged.metrics))}, sweep)
    assert (trial.number, trial.state, trial.parameters, trial.objective) == (2, "succeeded", CHOSEN, 1.25)
    assert type(trial.parameters["lora.r"]) is int and type(trial.parameters["hyperparameters.batch_size"]) is int
