"""The kit's retry policy holds on azure (issue 19 point 4): the Azure SDKs' own retries and their 300 s read
timeout are off (the launcher makes its MLClient and BlobServiceClient with retry_total=0 and its own timeouts),
a stalled or failing service ends within the policy's deadline plus one read timeout, with the same "retrying"
lines as aws and gcp, and each error names the service that failed (Blob storage is not Azure Machine Learning)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudtune.kit.retry import CloudError, RetryPolicy
from cloudtune.launcher import JobRef
from tests.azure.fake_azureml import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE
from tests.azure.test_submit import _plan, _spec
from tests.cloudfaults import BlackHole, FaultServer

from cloudtune_azure.launcher import CLIENT_TIMEOUTS, AzureLauncher

pytest.importorskip("azure.ai.ml")
DEADLINE = 3.0  # the policy's total, in seconds
READ_TIMEOUT = 1.0  # the clients' read timeout in these tests (CLIENT_TIMEOUTS otherwise)
SLACK = 100.0  # the SDK's client set-up on a loaded machine; far under the SDK's own 300 s read timeout, which the bound rules out
REF = JobRef("azure", "j", "j", extra={"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP,
                                       "workspace": WORKSPACE})


def _launcher(tmp_path: Path, lock_dir: Path | None = None) -> AzureLauncher:
    return AzureLauncher(client_kwargs={"read_timeout": READ_TIMEOUT}, home=tmp_path / "home", lock_dir=lock_dir,
                         policy=RetryPolicy(base_s=0.1, cap_s=0.3, deadline_s=DEADLINE, slow_after_s=0.5))


def test_the_clients_are_made_without_sdk_retries_and_with_bounded_timeouts() -> None:
    assert CLIENT_TIMEOUTS["read_timeout"] <= 60 and CLIENT_TIMEOUTS["connection_timeout"] <= 60


def test_a_stalled_workspace_api_ends_within_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with BlackHole() as hole:
        monkeypatch.setenv("AZUREML_DEV_URL_MFE", hole.url)
        monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")
        started = time.monotonic()
        with pytest.raises(CloudError) as exc:
            _launcher(tmp_path).status(REF)
        took = time.monotonic() - started
    assert exc.value.message.startswith("Azure Machine Learning: cannot reach the endpoint"), exc.value.message
    assert took < DEADLINE + READ_TIMEOUT + SLACK, took
    err = capsys.readouterr().err
    assert "get the command job: cannot reach the endpoint" in err and "retrying in" in err, err


@pytest.mark.parametrize("fault", ["503", "stall"])
def test_a_failing_blob_store_is_named_and_ends_within_the_deadline(azureml_fake, azurite, tmp_path: Path,
                                                                    lock_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str], fault: str) -> None:
    spec = _spec(tmp_path)
    with (FaultServer("503") if fault == "503" else BlackHole()) as server:
        # an account name that says nothing about Blob storage: the service is named by the call, not by the URL
        monkeypatch.setenv("CLOUDTUNE_AZURE_BLOB_ENDPOINT", f"{server.url}/acct")
        launcher = _launcher(tmp_path, lock_dir)
        plan = _plan(launcher, spec, tmp_path)
        started = time.monotonic()
        with pytest.raises(CloudError) as exc:
            launcher.submit(plan)
        took = time.monotonic() - started
    assert exc.value.message.startswith("Blob storage: "), exc.value.message
    assert took < DEADLINE + READ_TIMEOUT + SLACK, took
    assert "retrying in" in capsys.readouterr().err
    assert not azureml_fake.job_puts()  # nothing was created
