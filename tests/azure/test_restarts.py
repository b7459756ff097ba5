"""One restart story on Azure ML (issue 10 point 4): the service takes no retry count and restarts no command job, so
a portable spec with `retries` and `spot` compiles and cloudtune provides the retries while it watches the job
(`Job.wait`): a preempted attempt is launched again as a new command job whose checkpoints output is the previous
attempt's; bad input (65), divergence (66) and the job's own error are never launched again, as the local supervisor
never retries them. Run against the Azure ML fake (the first attempt is failed there with the service's message)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.runtime.exitcodes import EXIT_DIVERGED, EXIT_INPUT, EXIT_PREEMPTED, classify, retried
from cloudtune.spec import validate_spec
from cloudtune.store import JobStore
from tests.azure.planning import DS_IN, SUFFIX, settings, write_data
from tests.azure.test_cli import _job
from tests.azure.test_submit import FAST

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")


def test_the_multi_node_spot_spec_with_retries_compiles_and_says_who_restarts(tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    write_data(tmp_path)
    spec = validate_spec({"name": "spot", "inputs": DS_IN, "train": {"model": "gpt2"}, "retries": 2,
                          "resources": {"accelerator": "A100-80GB:8", "nodes": 2, "spot": True}}, base_dir=tmp_path)
    plan = AzureLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert plan.request["queue_settings"] == {"job_tier": "spot"} and plan.request["resources"]["instance_count"] == 2
    assert not {"retries", "retry", "max_retries"} & set(plan.request)  # Azure ML takes no retry count
    [note] = [n for n in plan.notes if n.startswith("retries 2:")]
    assert "cloudtune does, while a cloudtune process watches the job" in note
    assert "A detached launch that nothing watches is not restarted" in note and "--resume JOB" in note
    assert "bad input (65), divergence (66)" in note
    load_job(source=io.StringIO(yaml.safe_dump(plan.request, sort_keys=False)))
    assert not retried(classify(EXIT_INPUT)) and not retried(classify(EXIT_DIVERGED))  # the local supervisor's rule
    assert retried(classify(EXIT_PREEMPTED))


def _launch(tmp_path: Path, lock_dir: Path, azurite, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct"))
    monkeypatch.setenv("CLOUDTUNE_AZURE_BLOB_ENDPOINT", azurite.url)
    monkeypatch.setenv("CLOUDTUNE_AZURE_STORAGE_KEY", azurite.key)
    spec = _job(tmp_path, lock_dir, name="az-retry")
    spec.write_text(spec.read_text() + "retries: 2\n")
    launcher = AzureLauncher(policy=FAST, poll_s=0.01, home=tmp_path / "home")
    return api.launch(spec, provider="azure", launcher=launcher)


def test_a_preempted_attempt_is_launched_again_from_its_checkpoints(azureml_fake, azurite, tmp_path: Path,
                                                                   lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _launch(tmp_path, lock_dir, azurite, monkeypatch)
    first, checkpoints = job.job_id, job.record.extra["checkpoint_uri"]
    azureml_fake.set_status(first, "Failed", error=f"User process exited with exit code {EXIT_PREEMPTED}")
    assert job.wait(timeout=120, poll=0.01) == "succeeded"
    assert job.job_id == f"{first}-r2"  # the handle follows the new attempt
    [put] = azureml_fake.job_puts(job.job_id)
    assert put.body["properties"]["outputs"]["checkpoints"]["uri"].rstrip("/") == checkpoints.rstrip("/")
    store = JobStore()
    assert store.get(job.job_id).extra["resumed_from"] == first and store.get(job.job_id).extra["attempt"] == 2
    assert store.get(first).extra["resumed_by"] == job.job_id


@pytest.mark.parametrize("code", [EXIT_INPUT, EXIT_DIVERGED, 1])
def test_bad_input_divergence_and_errors_are_never_launched_again(azureml_fake, azurite, tmp_path: Path, lock_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    job = _launch(tmp_path, lock_dir, azurite, monkeypatch)
    azureml_fake.set_status(job.job_id, "Failed", error=f"User process exited with exit code {code}")
    assert job.wait(timeout=120, poll=0.01) == "failed"
    assert len(azureml_fake.job_puts()) == 1
