"""Launches through a faulty loopback proxy in front of the Azure ML fake: 500s, 503s, dropped connections before
the request reaches the service, and job PUTs whose answer is lost after the job was made. Every launch must end
with exactly one job: the job name is ours, so a retry finds (or re-PUTs) the job under that name."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.kit.retry import RetryPolicy
from tests.azure.test_submit import _plan, _spec
from tests.cloudfaults import FaultyProxy

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")


def _is_create(method: str, path: str) -> bool:
    return method == "PUT" and "/jobs/" in path


def test_faulty_network_gives_exactly_one_job_per_launch(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path,
                                                         lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.ai.ml import MLClient

    spec = _spec(tmp_path)
    policy = RetryPolicy(max_attempts=20, base_s=0.002, cap_s=0.02, deadline_s=30)
    n = 10
    with FaultyProxy(azureml_fake.url, rate=0.3, seed=7, is_create=_is_create) as proxy:
        monkeypatch.setenv("AZUREML_DEV_URL_MFE", proxy.url)
        refs = []
        for i in range(n):
            launcher = AzureLauncher(MLClient(**ml_client_kwargs, retry_total=0), policy=policy,
                                     home=tmp_path / "home", lock_dir=lock_dir)
            refs.append(launcher.submit(_plan(launcher, spec, tmp_path, suffix=f"20260101-0000{i:02d}-abcd")))
    assert len(azureml_fake.jobs) == n
    assert {ref.native_id for ref in refs} == set(azureml_fake.jobs)  # each launch holds the job it made
    assert proxy.lost_creates >= 2 and sum(proxy.faults.values()) >= 5, (proxy.faults, proxy.lost_creates)
