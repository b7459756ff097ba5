"""The real SDK call path against loopback fakes: azure-ai-ml's MLClient against the Azure ML workspace fake and
azure-storage-blob against Azurite. Launch, relaunch (0 bytes), status, logs, cancel, download, a failed job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudtune.kit.retry import CloudError, RetryPolicy
from cloudtune.launcher import JobRef
from cloudtune.spec import validate_spec
from tests.azure.fake_azureml import BLOBSTORE_CONTAINER
from tests.azure.planning import SUFFIX, settings, write_data

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")
FAST = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, deadline_s=10)


def _client(kwargs: dict[str, Any]) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(**kwargs, retry_total=0)  # the kit's policy retries; the SDK's own retries are off


def _launcher(kwargs: dict[str, Any], home: Path, lock_dir: Path) -> AzureLauncher:
    return AzureLauncher(_client(kwargs), policy=FAST, poll_s=0.01, home=home, lock_dir=lock_dir)


def _spec(tmp_path: Path):
    write_data(tmp_path)
    return validate_spec({"name": "az-e2e", "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                          "command": "python train.py", "code": "src"}, base_dir=tmp_path)


def _plan(launcher: AzureLauncher, spec: Any, tmp_path: Path, suffix: str = SUFFIX, **extra: Any):
    from cloudtune.bundle import build_bundle

    return launcher.plan(spec, settings(**extra), suffix=suffix, bundle=build_bundle(tmp_path / "src"))


def test_launch_status_logs_cancel_and_relaunch_uploads_nothing(azureml_fake, azurite, ml_client_kwargs,
                                                                tmp_path: Path, lock_dir: Path) -> None:
    spec = _spec(tmp_path)
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    plan = _plan(launcher, spec, tmp_path, compute="gpu-cluster")
    azureml_fake.keep_running(plan.job_name)
    ref = launcher.submit(plan)
    assert launcher.last_uploaded_bytes == sum(u.bytes for u in plan.uploads) > 0
    names = azurite.names(BLOBSTORE_CONTAINER)
    assert any(n.startswith("cloudtune/code/") and n.endswith("/bundle.tar.gz") for n in names)
    assert any(n.endswith("/eval/part-0.jsonl") for n in names) and any(n.endswith("/train.jsonl") for n in names)
    # the code asset points at the uploaded bundle's folder, registered under the plan's version
    version = plan.request["code"].rsplit("/", 1)[-1]
    code = azureml_fake.codes[("cloudtune-code", version)]
    assert code["properties"]["codeUri"].endswith(f"/{BLOBSTORE_CONTAINER}/cloudtune/code/{plan.uploads[-1].sha256}/")
    # exactly one job PUT, under the plan's name, carrying the planned command, inputs and outputs
    [put] = azureml_fake.job_puts()
    props = put.body["properties"]
    assert put.path.endswith(f"/jobs/{plan.job_name}") and props["command"] == plan.request["command"]
    assert props["codeId"].endswith(f"/codes/cloudtune-code/versions/{version}")
    assert set(props["inputs"]) == set(plan.request["inputs"]) and set(props["outputs"]) == {"model", "checkpoints", "logs"}
    assert props["computeId"].endswith("/computes/gpu-cluster")
    assert ref.native_id == plan.job_name and ref.console_url and "ml.azure.com" in ref.console_url
    # the store keeps the model's URI in its long form: a later job: reference knows the workspace
    assert ref.model_uri == plan.model_uri.replace(
        "azureml://", f"azureml://subscriptions/{azureml_fake.subscription}/resourcegroups/"
        f"{azureml_fake.resource_group}/workspaces/{azureml_fake.workspace}/")

    seen = [launcher.status(ref).state for _ in range(3)]  # NotStarted/Queued, then Running (and it stays)
    assert seen[-1] == "running" and set(seen) <= {"pending", "running"}
    lines = list(launcher.logs(ref))
    assert lines and any(plan.job_name in line or line for line in lines)
    launcher.cancel(ref)
    states = [launcher.status(ref) for _ in range(3)]  # CancelRequested (still running), then Canceled
    st = states[-1]
    assert st.state == "cancelled" and st.native == "Canceled"
    launcher.cancel(ref)  # cancelling an ended job is not an error

    # a relaunch of the same data and code uploads nothing and registers nothing new
    relauncher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    relauncher.submit(_plan(relauncher, spec, tmp_path, suffix="20260101-000001-abcd", compute="gpu-cluster"))
    assert relauncher.last_uploaded_bytes == 0
    assert len(azureml_fake.jobs) == 2 and len(azureml_fake.codes) == 1
    assert len(azureml_fake.calls("PUT", "/codes/")) == 1


def test_completed_job_logs_follow_and_download(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path,
                                                lock_dir: Path) -> None:
    spec = _spec(tmp_path)
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    plan = _plan(launcher, spec, tmp_path)  # serverless
    azureml_fake.log_lines[plan.job_name] = ["[cloudtune] step 1 loss 2.5"]
    ref = launcher.submit(plan)
    lines = list(launcher.logs(ref, follow=True, max_polls=20))
    assert "[cloudtune] step 1 loss 2.5" in lines
    assert launcher.status(ref).state == "succeeded"
    dest = tmp_path / "dl"
    dest.mkdir()
    launcher.download(ref, dest)
    assert (dest / "model.txt").read_bytes() == azureml_fake.model_files["model.txt"]
    # with checkpoints: the job's checkpoints output lands in dest/checkpoints
    ckpt = plan.request["outputs"]["checkpoints"]["path"].split("/paths/", 1)[1] + "checkpoint-2/trainer_state.json"
    with azurite.blob_service() as service:
        service.get_blob_client(BLOBSTORE_CONTAINER, ckpt).upload_blob(b'{"global_step": 2}')
    both = tmp_path / "dl2"
    both.mkdir()
    launcher.download(ref, both, checkpoints=True)
    assert (both / "checkpoints/checkpoint-2/trainer_state.json").read_bytes() == b'{"global_step": 2}'
    assert (both / "model.txt").exists()


def test_failed_job_surfaces_the_service_error(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path,
                                               lock_dir: Path) -> None:
    spec = _spec(tmp_path)
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    plan = _plan(launcher, spec, tmp_path)
    azureml_fake.fail_job(plan.job_name, "Execution failed. User process 'sh' exited with status code 2.")
    ref = launcher.submit(plan)
    states = [launcher.status(ref) for _ in range(4)]
    assert states[-1].state == "failed" and "status code 2" in (states[-1].failure_reason or "")


def test_a_missing_remote_input_is_refused_before_the_job(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path,
                                                          lock_dir: Path) -> None:
    from cloudtune.errors import InvalidInput

    write_data(tmp_path)
    spec = validate_spec({"name": "az-missing", "train": {"model": "gpt2"},
                          "inputs": {"train": "azureml://datastores/workspaceblobstore/paths/data/nope.jsonl"}},
                         base_dir=tmp_path)
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", lock_dir)
    with pytest.raises(InvalidInput) as info:
        launcher.submit(launcher.plan(spec, settings(), suffix=SUFFIX))
    assert "nope.jsonl" in str(info.value) and not azureml_fake.job_puts()


def test_unreachable_workspace_is_one_line_after_bounded_retries(azurite, tmp_path: Path, lock_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.azure.conftest import FakeCredential, bearer_policy
    from tests.cloudfaults import closed_port

    monkeypatch.setenv("AZUREML_DEV_URL_MFE", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")
    spec = _spec(tmp_path)
    cred = FakeCredential()
    from tests.azure.fake_azureml import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE

    kwargs = {"credential": cred, "subscription_id": SUBSCRIPTION, "resource_group_name": RESOURCE_GROUP,
              "workspace_name": WORKSPACE, "authentication_policy": bearer_policy(cred), "enable_telemetry": False}
    launcher = _launcher(kwargs, tmp_path / "home", lock_dir)
    with pytest.raises(CloudError) as info:
        launcher.submit(_plan(launcher, spec, tmp_path))
    text = str(info.value)
    assert text.startswith("Azure Machine Learning: cannot reach the endpoint") and "To fix:" in text
    assert "retrying" in capsys.readouterr().err


def test_status_of_a_job_the_workspace_does_not_know(azureml_fake, ml_client_kwargs, tmp_path: Path) -> None:
    launcher = _launcher(ml_client_kwargs, tmp_path / "home", tmp_path)
    ref = JobRef("azure", "ghost", "ghost-20260101", extra={"subscription_id": azureml_fake.subscription,
                                                           "resource_group": azureml_fake.resource_group,
                                                           "workspace": azureml_fake.workspace})
    with pytest.raises(CloudError) as info:
        launcher.status(ref)
    assert "ghost-20260101" in str(info.value) and "To fix:" in str(info.value)
