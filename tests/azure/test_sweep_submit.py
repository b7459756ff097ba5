"""An Azure ML sweep through the real SDK call path: azure-ai-ml's MLClient against the Azure ML workspace fake and
Azurite. The sweep job YAML loads as a SweepJob and is PUT once; status and cancel act on the whole sweep; its trials
are read back as run history lists the sweep's child jobs (number and state), with their values and objective from
the workspace's MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudtune.kit.retry import RetryPolicy
from cloudtune.spec import validate_spec
from tests.azure.fake_azureml import BLOBSTORE_CONTAINER
from tests.azure.planning import SUFFIX, settings, write_data

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")
FAST = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, deadline_s=10)


def _launcher(kwargs: dict[str, Any], home: Path, lock_dir: Path) -> AzureLauncher:
    from azure.ai.ml import MLClient

    return AzureLauncher(MLClient(**kwargs, retry_total=0), policy=FAST, poll_s=0.01, home=home, lock_dir=lock_dir)


def test_sweep_submit_status_cancel(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path, lock_dir: Path) -> None:
    write_data(tmp_path)
    spec = validate_spec({"name": "az-sweep", "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                          "resources": {"accelerator": "A100-80GB:1"},
                          "train": {"model": "gpt2", "lora": {}, "data": {"eval": "eval"},
                                    "hyperparameters": {"eval_every": 10}},
                          "sweep": {"parameters": {"learning_rate": {"loguniform": [1e-5, 1e-3]},
                                                   "lora.r": {"choice": [8, 16]}},
                                    "algorithm": "random", "max_trials": 4}}, base_dir=tmp_path)
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    plan = launcher.plan(spec, settings(compute="gpu-cluster"), suffix=SUFFIX)
    azureml_fake.keep_running(plan.job_name)
    ref = launcher.submit(plan)
    assert ref.extra["kind"] == "sweep" and ref.native_id == plan.job_name and ref.model_uri is None
    assert any(n.startswith("cloudtune/code/") for n in azurite.names(BLOBSTORE_CONTAINER))
    version = plan.request["trial"]["code"].rsplit("/", 1)[-1]
    assert ("cloudtune-code", version) in azureml_fake.codes  # the trial's code asset, registered before the PUT

    [put] = azureml_fake.job_puts()
    props = put.body["properties"]
    assert props["jobType"] == "Sweep" and put.path.endswith(f"/jobs/{plan.job_name}")
    assert props["trial"]["command"] == plan.request["trial"]["command"]
    assert props["trial"]["codeId"].endswith(f"/codes/cloudtune-code/versions/{version}")
    assert set(props["searchSpace"]) == {"hyperparameters__learning_rate", "lora__r"}
    assert props["searchSpace"]["hyperparameters__learning_rate"] == ["loguniform", [plan.request["search_space"][
        "hyperparameters__learning_rate"]["min_value"], plan.request["search_space"]["hyperparameters__learning_rate"]["max_value"]]]
    assert props["limits"]["maxTotalTrials"] == 4 and props["objective"] == {"goal": "minimize", "primaryMetric": "eval_loss"}
    assert props["earlyTermination"]["policyType"] == "MedianStopping"
    assert props["computeId"].endswith("/computes/gpu-cluster")

    seen = [launcher.status(ref).state for _ in range(3)]
    assert seen[-1] == "running"
    assert launcher.sweep_trials(ref) == []  # no trial started yet
    names = azureml_fake.add_trials(plan.job_name, "Completed", "Running", "Failed", "NotStarted")
    # each started trial's MLflow run, as its container logged it: the values (params by option path, text) and
    # each evaluation's eval_loss; "learning_rate" is the Trainer's own MLflow param, not the sweep's
    azureml_fake.log_run(names[0], {"hyperparameters.learning_rate": "0.0003", "lora.r": "16", "learning_rate": "9"},
                         {"eval_loss": 1.25, "train_loss": 1.5})
    azureml_fake.log_run(names[1], {"hyperparameters.learning_rate": "2e-05", "lora.r": "8"}, {"eval_loss": 2.5})
    azureml_fake.log_run(names[2], {"hyperparameters.learning_rate": "0.001", "lora.r": "8"}, {})
    trials = launcher.sweep_trials(ref)  # run history's children of the sweep, through MLClient.jobs.list
    assert [(t.number, t.state, t.job_id) for t in trials] == list(zip(
        range(4), ["succeeded", "running", "failed", "pending"], names))
    assert [(t.parameters, t.objective) for t in trials] == [
        ({"hyperparameters.learning_rate": 0.0003, "lora.r": 16}, 1.25),
        ({"hyperparameters.learning_rate": 2e-05, "lora.r": 8}, 2.5),
        ({"hyperparameters.learning_rate": 0.001, "lora.r": 8}, None), ({}, None)]
    assert [t.note is None for t in trials] == [True, True, True, False] and "has not started" in trials[3].note
    assert any(r.path.endswith(f"/runs/{plan.job_name}/children") for r in azureml_fake.calls("GET"))
    mlflow_gets = [r for r in azureml_fake.calls("GET") if r.path.endswith("/api/2.0/mlflow/runs/get")]
    assert sorted(r.query["run_id"] for r in mlflow_gets) == sorted(names)
    assert all(r.path.startswith("/mlflow/v2.0/subscriptions/") and r.headers.get("authorization", "").startswith(
        "Bearer ") for r in mlflow_gets)
    launcher.cancel(ref)  # the whole sweep
    states = [launcher.status(ref) for _ in range(3)]
    assert states[-1].state == "cancelled" and states[-1].native == "Canceled"
    launcher.cancel(ref)  # an ended sweep: no error
    assert launcher.find(plan).native_id == plan.job_name


def test_mlflow_rest_base_from_the_workspace_tracking_uri() -> None:
    from cloudtune_azure.mlflowruns import rest_base

    scope = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws")
    uri = f"azureml://eastus.api.azureml.ms/mlflow/v1.0{scope}"
    assert rest_base(uri) == f"https://eastus.api.azureml.ms/mlflow/v2.0{scope}"  # azureml-mlflow's form
    assert rest_base(uri, "http://127.0.0.1:8123/") == f"http://127.0.0.1:8123/mlflow/v2.0{scope}"
    with pytest.raises(ValueError, match="not an Azure ML MLflow tracking URI"):
        rest_base("file:///tmp/mlruns")
