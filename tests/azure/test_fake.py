"""The Azure ML fake answers the real azure-ai-ml SDK: datastores, code versions, command jobs (named compute and
serverless) from a job YAML, their status, logs and model in Azurite, cancel, list, and the service's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.azure.fake_azureml import ARTIFACT_CONTAINER, AZURITE_KEY, BLOBSTORE_CONTAINER, JOB_EXISTS, FakeAzureML

NAME = "tiny-20260101-000000-abcd"
CODE_VERSION = "0123abcd"


def job_yaml(fake: FakeAzureML, name: str = NAME, *, serverless: bool = False, nodes: int = 2,
             per_node: int = 8, command: str = "") -> str:
    code_id = f"{fake.ws_id}/codes/cloudtune-code/versions/{CODE_VERSION}"
    where = (f"resources: {{instance_count: {nodes}, instance_type: Standard_NC24ads_A100_v4}}" if serverless
             else f"compute: azureml:gpu-cluster\nresources: {{instance_count: {nodes}}}")
    dist = f"distribution: {{type: pytorch, process_count_per_instance: {per_node}}}\n" if per_node > 1 else ""
    out = f"azureml://datastores/workspaceblobstore/paths/cloudtune/output/{name}"
    return f"""\
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
type: command
name: {name}
display_name: tiny
experiment_name: tiny
code: azureml:{code_id}
command: {command or 'sh .cloudtune/bootstrap.sh ${{inputs.wheelhouse}} --input train=${{inputs.train}} --model-dir ${{outputs.model}}'}
environment: azureml://registries/azureml/environments/acpt-pytorch-2.2-cuda12.1/labels/latest
{where}
{dist}inputs:
  train: {{type: uri_folder, path: azureml://datastores/workspaceblobstore/paths/cloudtune/inputs/abc/train/, mode: ro_mount}}
  wheelhouse: {{type: uri_folder, path: azureml://datastores/workspaceblobstore/paths/cloudtune/wheelhouses/abc/, mode: download}}
outputs:
  model: {{type: uri_folder, path: {out}/model/, mode: rw_mount}}
  checkpoints: {{type: uri_folder, path: {out}/checkpoints/, mode: rw_mount}}
environment_variables: {{A: b}}
limits: {{timeout: 3600}}
queue_settings: {{job_tier: spot}}
identity: {{type: user_identity}}
tags: {{cloudtune-job: tiny}}
"""


def submit(ml_client: Any, fake: FakeAzureML, tmp_path: Path, name: str = NAME, **kw: Any) -> Any:
    from azure.ai.ml import load_job

    fake.add_code("cloudtune-code", CODE_VERSION, f"{fake.blob_endpoint}/{BLOBSTORE_CONTAINER}/cloudtune/code/x/")
    path = tmp_path / f"{name}.yml"
    path.write_text(job_yaml(fake, name, **kw))
    return ml_client.jobs.create_or_update(load_job(source=str(path)))


def status(job: Any) -> str:
    return str(getattr(job.status, "value", job.status))  # the SDK answers a str enum (JobStatus)


def statuses(ml_client: Any, name: str, n: int) -> list[str]:
    return [status(ml_client.jobs.get(name)) for _ in range(n)]


def test_datastores(ml_client: Any, azureml_fake: FakeAzureML) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    blob = ml_client.datastores.get("workspaceblobstore")
    assert (blob.type, blob.account_name, blob.container_name) == ("AzureBlob", "devstoreaccount1", BLOBSTORE_CONTAINER)
    assert ml_client.datastores.get_default().name == "workspaceblobstore"
    assert ml_client.datastores.get("workspaceartifactstore").container_name == ARTIFACT_CONTAINER
    assert ml_client.datastores.get("workspaceblobstore", include_secrets=True).credentials.account_key == AZURITE_KEY
    with pytest.raises(ResourceNotFoundError, match="Datastore nope does not exist"):
        ml_client.datastores.get("nope")
    assert not azureml_fake.unhandled


def test_code_version_get_and_register(ml_client: Any, azureml_fake: FakeAzureML, azurite: Any) -> None:
    from azure.ai.ml.entities._assets import Code
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError):
        ml_client._code.get(name="cloudtune-code", version=CODE_VERSION)
    folder = f"{azurite.url}/{BLOBSTORE_CONTAINER}/cloudtune/code/{CODE_VERSION}/"
    made = ml_client._code.create_or_update(Code(name="cloudtune-code", version=CODE_VERSION, path=folder))
    assert made.id == f"{azureml_fake.ws_id}/codes/cloudtune-code/versions/{CODE_VERSION}"
    assert ml_client._code.get(name="cloudtune-code", version=CODE_VERSION).path == folder
    put = azureml_fake.calls("PUT", "/codes/")
    assert len(put) == 1 and put[0].body["properties"]["codeUri"] == folder  # remote path: nothing uploaded
    ml_client._code.create_or_update(Code(name="cloudtune-code", version=CODE_VERSION, path=folder))  # same: fine
    with pytest.raises(HttpResponseError, match="Asset paths cannot be updated"):
        ml_client._code.create_or_update(Code(name="cloudtune-code", version=CODE_VERSION, path=folder + "other/"))


def test_command_job_on_a_named_cluster_runs_and_writes_logs_and_model(
        ml_client: Any, azureml_fake: FakeAzureML, azurite: Any, tmp_path: Path) -> None:
    job = submit(ml_client, azureml_fake, tmp_path)
    assert job.name == NAME and status(job) == "NotStarted"
    (put,) = azureml_fake.job_puts(NAME)
    props = put.body["properties"]
    assert props["computeId"].endswith("/computes/gpu-cluster") and props["resources"]["instanceCount"] == 2
    assert props["codeId"].endswith(f"/codes/cloudtune-code/versions/{CODE_VERSION}")
    assert props["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 8}
    assert props["queueSettings"] == {"jobTier": "Spot"} and props["limits"]["timeout"] == "PT1H"
    assert props["identity"] == {"identityType": "UserIdentity"} and props["environmentVariables"] == {"A": "b"}
    assert put.headers.get("x-azureml-token")  # a user-identity job carries the user's token for ml.azure.com
    assert azurite.names(ARTIFACT_CONTAINER) == []

    assert statuses(ml_client, NAME, 2) == ["Queued", "Running"]
    logs = azurite.names(ARTIFACT_CONTAINER, f"ExperimentRun/dcid.{NAME}/user_logs/")
    assert logs == sorted(f"ExperimentRun/dcid.{NAME}/user_logs/std_log_process_{r}.txt" for r in range(16))
    assert statuses(ml_client, NAME, 2) == ["Completed", "Completed"]
    text = azurite.read(ARTIFACT_CONTAINER, f"ExperimentRun/dcid.{NAME}/user_logs/std_log_process_0.txt").decode()
    assert f"job {NAME} finished" in text
    done = ml_client.jobs.get(NAME)
    model_uri = done.outputs["model"].path
    assert model_uri == f"azureml://datastores/workspaceblobstore/paths/cloudtune/output/{NAME}/model/"
    assert azurite.read(BLOBSTORE_CONTAINER, f"cloudtune/output/{NAME}/model/model.txt") == azureml_fake.model_files[
        "model.txt"]
    assert done.outputs["default"].path == f"azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.{NAME}"
    assert not azureml_fake.unhandled and not azureml_fake.errors
    assert all(r.headers.get("authorization", "").startswith("Bearer ") for r in azureml_fake.requests)


def test_serverless_single_process_job_logs_to_std_log(ml_client: Any, azureml_fake: FakeAzureML, azurite: Any,
                                                       tmp_path: Path) -> None:
    job = submit(ml_client, azureml_fake, tmp_path, serverless=True, nodes=1, per_node=1)
    assert job.compute is None and job.resources.instance_type == "Standard_NC24ads_A100_v4"
    props = azureml_fake.job_puts(NAME)[0].body["properties"]
    assert "computeId" not in props and "distribution" not in props
    assert props["resources"] == {"instanceCount": 1, "instanceType": "Standard_NC24ads_A100_v4", "properties": {}}
    assert statuses(ml_client, NAME, 3) == ["Queued", "Running", "Completed"]
    assert azurite.names(ARTIFACT_CONTAINER) == [f"ExperimentRun/dcid.{NAME}/user_logs/std_log.txt"]


def test_failed_and_running_jobs(ml_client: Any, azureml_fake: FakeAzureML, azurite: Any, tmp_path: Path) -> None:
    azureml_fake.fail_job("bad-job", "CUDA out of memory")
    azureml_fake.keep_running("slow-job")
    submit(ml_client, azureml_fake, tmp_path, "bad-job", nodes=1, per_node=1)
    submit(ml_client, azureml_fake, tmp_path, "slow-job", nodes=1, per_node=1)
    assert statuses(ml_client, "bad-job", 4) == ["Queued", "Running", "Failed", "Failed"]
    assert "CUDA out of memory" in azurite.read(
        ARTIFACT_CONTAINER, "ExperimentRun/dcid.bad-job/user_logs/std_log.txt").decode()
    details = ml_client.jobs._runs_operations.get_run_details("bad-job")  # run history: the job's error
    assert details.status == "Failed" and details.error.error.message == "CUDA out of memory"
    assert statuses(ml_client, "slow-job", 4) == ["Queued", "Running", "Running", "Running"]
    assert not azurite.names(BLOBSTORE_CONTAINER, "cloudtune/output/bad-job/")  # no model from a failed job


def test_cancel_and_list(ml_client: Any, azureml_fake: FakeAzureML, tmp_path: Path) -> None:
    azureml_fake.keep_running("to-cancel")
    submit(ml_client, azureml_fake, tmp_path, "to-cancel", nodes=1, per_node=1)
    submit(ml_client, azureml_fake, tmp_path, "other", nodes=1, per_node=1)
    assert statuses(ml_client, "to-cancel", 2) == ["Queued", "Running"]
    ml_client.jobs.begin_cancel("to-cancel").result()
    assert status(ml_client.jobs.get("to-cancel")) == "Canceled"
    assert azureml_fake.calls("POST", "/jobs/to-cancel/cancel")
    assert azureml_fake.calls("GET", "/mfeOperationResults/")
    assert {j.name for j in ml_client.jobs.list()} == {"to-cancel", "other"}
    assert not azureml_fake.unhandled


def test_a_put_of_an_existing_job_name(ml_client: Any, azureml_fake: FakeAzureML, tmp_path: Path) -> None:
    from azure.ai.ml import load_job
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    submit(ml_client, azureml_fake, tmp_path)
    again = submit(ml_client, azureml_fake, tmp_path)  # the same definition: an update, no error
    assert again.name == NAME and len(azureml_fake.job_puts(NAME)) == 2
    changed = tmp_path / "changed.yml"
    changed.write_text(job_yaml(azureml_fake, command="python other.py"))
    with pytest.raises(HttpResponseError, match="A job with this name already exists") as err:
        ml_client.jobs.create_or_update(load_job(source=str(changed)))
    assert err.value.status_code == 400 and err.value.error.code == "UserError"
    assert JOB_EXISTS.split(".")[0] in str(err.value)
    with pytest.raises(ResourceNotFoundError, match="Job nope not found"):
        ml_client.jobs.get("nope")


def test_unknown_compute(ml_client: Any, azureml_fake: FakeAzureML, tmp_path: Path) -> None:
    from azure.core.exceptions import HttpResponseError

    del azureml_fake.computes["gpu-cluster"]
    with pytest.raises(HttpResponseError, match="Compute gpu-cluster was not found") as err:
        submit(ml_client, azureml_fake, tmp_path)
    assert err.value.status_code == 400 and not azureml_fake.jobs


def test_injected_service_error(ml_client: Any, azureml_fake: FakeAzureML, tmp_path: Path) -> None:
    from azure.core.exceptions import HttpResponseError

    azureml_fake.fail_next("PUT", r"/jobs/", 403, "AuthorizationFailed", "The client does not have authorization "
                           "to perform action 'Microsoft.MachineLearningServices/workspaces/jobs/write'.")
    with pytest.raises(HttpResponseError, match="AuthorizationFailed") as err:
        submit(ml_client, azureml_fake, tmp_path)
    assert err.value.status_code == 403
    assert submit(ml_client, azureml_fake, tmp_path).name == NAME  # one failure only


def test_a_code_reference_in_a_job_yaml_must_be_the_arm_id(ml_client: Any, azureml_fake: FakeAzureML,
                                                            tmp_path: Path) -> None:
    """azure-ai-ml 1.35 reads `code: azureml:<name>:<version>` in a command job as the local path
    "<name>:<version>" (its schema strips the prefix and the command resolver takes a non-ARM-id string for a
    folder to upload), so a job YAML names a registered code version by its ARM id (`code: azureml:/subscriptions/
    .../codes/<name>/versions/<version>`, as job_yaml does), or sets `job.code` to that id after load_job."""
    from azure.ai.ml import load_job
    from azure.core.exceptions import HttpResponseError

    path = tmp_path / "short.yml"
    path.write_text(job_yaml(azureml_fake).replace(f"code: azureml:{azureml_fake.ws_id}/codes/cloudtune-code/"
                                                   f"versions/{CODE_VERSION}", f"code: azureml:cloudtune-code:"
                                                   f"{CODE_VERSION}"))
    job = load_job(source=str(path))
    assert job.code == f"cloudtune-code:{CODE_VERSION}"
    with pytest.raises(Exception, match="No such file or directory"):
        ml_client.jobs.create_or_update(job)
    assert not azureml_fake.job_puts()
    job.code = f"{azureml_fake.ws_id}/codes/cloudtune-code/versions/{CODE_VERSION}"
    with pytest.raises(HttpResponseError, match="Code asset cloudtune-code:0123abcd was not found"):
        ml_client.jobs.create_or_update(job)  # the service checks that the code version exists
    azureml_fake.add_code("cloudtune-code", CODE_VERSION, "https://example/x/")
    assert ml_client.jobs.create_or_update(job).name == NAME
