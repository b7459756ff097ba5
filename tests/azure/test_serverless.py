"""`compute: serverless` (azure-ai-ml's reserved name, azure.ai.ml.constants._common.SERVERLESS_COMPUTE) is serverless
compute, not a cluster named "serverless": the request is the one an unset compute gives (VM size and count in
`resources`, the spot tier in `queue_settings`), plus a note; the SDK's schema loads it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from cloudtune.spec import validate_spec
from tests.azure.planning import DS_IN, SUFFIX, settings, write_data

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")


@pytest.mark.parametrize("compute", ["serverless", "azureml:serverless", "Serverless"])
def test_serverless_is_serverless_compute(tmp_path: Path, compute: str) -> None:
    from azure.ai.ml import load_job

    write_data(tmp_path)
    spec = validate_spec({"name": "sl", "inputs": DS_IN, "train": {"model": "gpt2"},
                          "resources": {"accelerator": "T4:1", "spot": True}}, base_dir=tmp_path)
    launcher = AzureLauncher(home=tmp_path / "home")
    plan = launcher.plan(spec, settings(compute=compute), suffix=SUFFIX)
    unset = launcher.plan(spec, settings(), suffix=SUFFIX)
    assert "compute" not in plan.request
    assert plan.request == unset.request
    assert plan.request["queue_settings"] == {"job_tier": "spot"}
    assert plan.request["resources"]["instance_type"] == unset.request["resources"]["instance_type"]
    assert any("reserved name for serverless compute" in note for note in plan.notes)
    load_job(source=io.StringIO(yaml.safe_dump(plan.request, sort_keys=False)))
