"""`--resume JOB` on the Azure ML fake (issue 10): the new command job's `checkpoints` output is the stopped job's
folder (mounted read-write), where the runtime resumes from the newest complete checkpoint; the store links them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.store import JobStore
from tests.azure.test_cli import _job
from tests.azure.test_submit import FAST

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")


def test_resume_points_the_new_job_at_the_stopped_jobs_checkpoints(azureml_fake, azurite, tmp_path: Path,
                                                                  lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct"))
    monkeypatch.setenv("CLOUDTUNE_AZURE_BLOB_ENDPOINT", azurite.url)
    monkeypatch.setenv("CLOUDTUNE_AZURE_STORAGE_KEY", azurite.key)
    spec = _job(tmp_path, lock_dir, name="az-resume")
    launcher = AzureLauncher(policy=FAST, poll_s=0.01, home=tmp_path / "home")
    first = api.launch(spec, provider="azure", launcher=launcher)
    azureml_fake.set_status(first.job_id, "Canceled")
    assert first.status() == "cancelled"
    checkpoints = first.record.extra["checkpoint_uri"]

    again = api.launch(spec, provider="azure", launcher=launcher, resume=first.job_id)
    assert again.job_id != first.job_id
    [put] = azureml_fake.job_puts(again.job_id)
    outputs = put.body["properties"]["outputs"]
    assert outputs["checkpoints"]["uri"].rstrip("/") == checkpoints.rstrip("/"), outputs
    assert JobStore().get(again.job_id).extra["resumed_from"] == first.job_id
    assert JobStore().get(first.job_id).extra["resumed_by"] == again.job_id
