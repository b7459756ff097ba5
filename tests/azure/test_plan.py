"""Golden Azure ML command job YAMLs per scenario, loaded by the SDK's own schema and checked against the catalog.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/azure/test_plan.py
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtune.catalog import load_catalog
from cloudtune.contracts import azureml as az
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.states import AZUREML
from cloudtune.spec import validate_spec
from tests.azure.planning import DS_IN, SUFFIX, build, normalise, scenarios, settings, write_data
from tests.golden import assert_golden

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")
GOLDEN = Path(__file__).parent / "golden"
NAMES = sorted(scenarios(Path("/x")))


def load(request: dict[str, Any]):
    from azure.ai.ml import load_job

    return load_job(source=io.StringIO(yaml.safe_dump(request, sort_keys=False)))


@pytest.mark.parametrize("name", NAMES)
def test_golden_job_yaml(name: str, tmp_path: Path) -> None:
    assert_golden(GOLDEN / f"{name}.yml", normalise(build(name, tmp_path), tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_job_yaml_loads_as_the_sdk_command_job(name: str, tmp_path: Path) -> None:
    """The job YAML is a command job by azure-ai-ml's own schema; its machine and counts agree with the catalog."""
    from azure.ai.ml.entities import Command

    plan = build(name, tmp_path)
    job = load(plan.request)
    assert isinstance(job, Command)
    assert job.name == plan.job_name and job.command == plan.request["command"]
    assert set(job.inputs) == set(plan.request["inputs"]) and set(job.outputs) == {"model", "checkpoints", "logs"}
    for out in job.outputs.values():
        assert out.mode == "rw_mount" and out.path.startswith("azureml://datastores/")
    assert job.resources.instance_count == plan.instance_count
    spec = validate_spec(scenarios(tmp_path)[name][0], base_dir=tmp_path)
    offer = load_catalog().by_instance_type("azure", job.resources.instance_type or "") if job.resources.instance_type else None
    if job.compute is None:  # serverless: the VM size is the catalog's, with the spec's GPUs
        assert offer is not None and offer.accelerator == spec.resources.accel.name
        assert offer.count == spec.resources.accel.count
    else:
        assert job.compute.startswith("azureml:") or job.compute == plan.request["compute"].removeprefix("azureml:")
    assert job.limits.timeout == spec.resources.max_runtime_seconds
    if plan.instance_count > 1:
        assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1
    # every ${{inputs.X}} / ${{outputs.X}} on the command line names a declared input or output
    import re

    for kind, ref in re.findall(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}", job.command):
        assert ref in (job.inputs if kind == "inputs" else job.outputs), ref


def test_schema_refuses_unknown_fields_and_bad_values(tmp_path: Path) -> None:
    from azure.ai.ml.exceptions import ValidationException
    from marshmallow import ValidationError

    plan = build("serverless_2x8_a100_spot", tmp_path)
    with pytest.raises((ValidationException, ValidationError)):
        load({**plan.request, "resourcez": {}})
    with pytest.raises((ValidationException, ValidationError)):
        load({**plan.request, "outputs": {"model": {"type": "uri_folder", "mode": "rw_mountt", "path": "azureml://x"}}})


def test_spot_serverless_uses_the_spot_tier_and_its_price(tmp_path: Path) -> None:
    plan = build("serverless_2x8_a100_spot", tmp_path)
    assert plan.request["queue_settings"] == {"job_tier": "spot"}
    offer = load_catalog().by_instance_type("azure", plan.instance_type)
    assert plan.cost_basis == "spot" and plan.estimated_usd_per_hour == pytest.approx(offer.spot_usd_per_hour * 2)


def test_local_inputs_are_uploaded_by_content_and_small_ones_downloaded(tmp_path: Path) -> None:
    plan = build("single_gpu_named_cluster", tmp_path)
    inputs = plan.request["inputs"]
    assert inputs["train"]["type"] == "uri_file" and inputs["eval"]["type"] == "uri_folder"
    assert inputs["train"]["mode"] == inputs["eval"]["mode"] == "download"
    dests = {u.destination for u in plan.uploads}
    assert inputs["train"]["path"] in dests and inputs["eval"]["path"] in dests
    assert "/inputs/" in inputs["train"]["path"] and plan.request["compute"] == "azureml:gpu-cluster"
    assert "instance_type" not in plan.request["resources"]  # the cluster decides its VM size


def test_remote_inputs_are_used_as_they_are_and_mounted(tmp_path: Path) -> None:
    plan = build("serverless_2x8_a100_spot", tmp_path)
    for name, uri in DS_IN.items():
        entry = plan.request["inputs"][name]
        assert entry["path"] == uri and entry["mode"] == "ro_mount"
    assert plan.request["inputs"]["eval"]["type"] == "uri_folder" and plan.request["inputs"]["train"]["type"] == "uri_file"


def test_secrets_travel_as_references_with_an_identity(tmp_path: Path) -> None:
    plan = build("secrets_identity_tags", tmp_path)
    text = yaml.safe_dump(plan.request)
    assert plan.request["identity"] == {"type": "managed"}
    assert "hf-token" in text and "azure-keyvault-secrets" in plan.request["command"]
    assert plan.request["tags"] == {"cloudtune-job": "secure", "cost-center": "42", "team": "ml"}
    assert plan.request["experiment_name"] == "secure-runs"


def test_a_user_assigned_identity_is_named_to_the_job(tmp_path: Path) -> None:
    write_data(tmp_path)
    client_id = "12345678-90ab-cdef-1234-567890abcdef"
    spec = validate_spec({"name": "s", "inputs": DS_IN, "train": {"model": "gpt2"},
                          "secrets": {"HF_TOKEN": "https://v-1.vault.azure.net/secrets/hf"}}, base_dir=tmp_path)
    plan = AzureLauncher(home=tmp_path / "home").plan(spec, settings(identity=client_id), suffix=SUFFIX)
    assert plan.request["identity"] == {"type": "managed", "client_id": client_id}
    assert plan.request["environment_variables"]["AZURE_CLIENT_ID"] == client_id  # DefaultAzureCredential's choice
    load(plan.request)


def test_secrets_default_to_the_user_identity(tmp_path: Path) -> None:
    write_data(tmp_path)
    spec = validate_spec({"name": "s", "inputs": DS_IN, "train": {"model": "gpt2"},
                          "secrets": {"HF_TOKEN": "https://ml-vault.vault.azure.net/secrets/hf"}}, base_dir=tmp_path)
    plan = AzureLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert plan.request["identity"] == {"type": "user_identity"}


def test_the_command_carries_the_contract(tmp_path: Path) -> None:
    """cloudtune-run's arguments are the contract module's, with Azure ML's ${{...}} references."""
    plan = build("single_gpu_named_cluster", tmp_path)
    cmd = plan.request["command"]
    for flag in (az.JOB_JSON_ARG, az.MODEL_DIR_ARG, az.CHECKPOINT_DIR_ARG, az.LOG_DIR_ARG):
        assert flag in cmd
    assert "'train=${{inputs.train}}'" in cmd and "'${{outputs.model}}'" in cmd
    assert plan.model_uri == plan.request["outputs"]["model"]["path"]


def test_every_native_state_maps() -> None:
    """Every status of the SDK's own JobStatus enum is in the kit's Azure ML table."""
    from azure.ai.ml._restclient.arm_ml_service.models._enums import JobStatus

    assert {s.value for s in JobStatus} == set(AZUREML)


def test_plan_imports_no_sdk_and_writes_nothing(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from tests.azure.planning import build; "
            f"build('custom_image_command', Path({str(tmp_path)!r})); "
            "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout
    assert not (tmp_path / "home").exists()  # the bundle is named, not written


@pytest.mark.parametrize("data, extra, needle", [
    ({"resources": {"accelerator": "TPU-v5e:4"}}, {}, "no TPUs"),
    ({"inputs": {"train": "s3://b/train.jsonl"}}, {}, "not on Azure storage"),
    ({"inputs": {"train": "gs://b/train.jsonl"}}, {}, "not on Azure storage"),
    ({"resources": {"accelerator": "T4:1", "spot": True}}, {"compute": "gpu-cluster"}, "low_priority"),
    ({}, {"compute": "bad name!"}, "compute"),
    ({}, {"identity": "root"}, "identity"),
    ({"outputs": "s3://b/out"}, {}, "datastore URI"),
    ({"resources": {"accelerator": "A100-80GB:1"}}, {"experiment_name": "has space"}, "experiment_name"),
    ({}, {"datastore": "my store"}, "datastore"),
    ({"secrets": {"T": "arn:aws:secretsmanager:us-east-1:123456789012:secret:t"}}, {}, "Key Vault"),
    ({"inputs": {**DS_IN, "raw": "https://acct1.blob.core.windows.net/c/d/?sv=2024&sig=abc"}}, {}, "SAS"),
    ({"inputs": {**DS_IN, "raw": "https://user@acct1.blob.core.windows.net/c/d/"}}, {}, "SAS"),
    ({"inputs": {**DS_IN, "raw-data": "azureml://datastores/d/paths/x/"}}, {}, "raw_data"),
    ({"inputs": {**DS_IN, "cloudtune_wheelhouse": "azureml://datastores/d/paths/x/"}}, {}, "wheelhouse"),
])
def test_unsupported_specs_are_refused_with_a_fix(tmp_path: Path, data: dict[str, Any], extra: dict[str, Any],
                                                  needle: str) -> None:
    write_data(tmp_path)
    base = {"name": "bad", "inputs": DS_IN, "train": {"model": "gpt2"}}
    spec = validate_spec({**base, **data}, base_dir=tmp_path)
    with pytest.raises(UnsupportedSpec) as info:
        AzureLauncher(home=tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX)
    assert needle in str(info.value) and info.value.fix


def test_spot_on_a_declared_low_priority_cluster_is_allowed(tmp_path: Path) -> None:
    write_data(tmp_path)
    spec = validate_spec({"name": "lp", "inputs": DS_IN, "train": {"model": "gpt2"},
                          "resources": {"accelerator": "T4:1", "spot": True}}, base_dir=tmp_path)
    plan = AzureLauncher(home=tmp_path / "home").plan(spec, settings(compute="lp-cluster", compute_tier="low_priority"),
                                                      suffix=SUFFIX)
    assert "queue_settings" not in plan.request and plan.cost_basis == "spot"


def test_all_missing_settings_in_one_error(tmp_path: Path) -> None:
    from cloudtune_azure.settings import AzureSettings

    spec = validate_spec({"name": "x", "inputs": DS_IN, "train": {"model": "gpt2"}}, base_dir=tmp_path)
    with pytest.raises(UnsupportedSpec) as info:
        AzureLauncher(home=tmp_path).plan(spec, AzureSettings(), suffix=SUFFIX)
    text = str(info.value)
    assert all(f"providers.azure.{k}" in text for k in ("subscription_id", "resource_group", "workspace"))
    assert "AZURE_SUBSCRIPTION_ID" in text


# ------------------------------------------------------------------ train.model: job:<JOB> in an Azure ML plan
def _azure_job(job_id: str, model_uri: str) -> None:
    import time

    from cloudtune.store import JobRecord, JobStore

    now = time.time()
    JobStore().add(JobRecord(job_id=job_id, provider="azure", name=job_id, state="succeeded", created_at=now,
                             updated_at=now, native_id=job_id, model_uri=model_uri))


def test_a_job_model_of_this_workspace_is_the_model_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.azure.planning import SUBSCRIPTION

    from cloudtune.jobmodel import resolve_job_model
    from cloudtune.store import JobStore

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    path = "datastores/workspaceblobstore/paths/cloudtune/output/first-1/model/"
    _azure_job("first-1", f"azureml://subscriptions/{SUBSCRIPTION}/resourcegroups/ml-rg/workspaces/ml-ws/{path}")
    _azure_job("other-1", f"azureml://subscriptions/{SUBSCRIPTION}/resourcegroups/ml-rg/workspaces/elsewhere/{path}")
    write_data(tmp_path)
    spec = validate_spec({"name": "second", "inputs": {"train": "data/train.jsonl"},
                          "train": {"model": "job:first-1"}}, base_dir=tmp_path)
    spec = resolve_job_model(spec, "azure", JobStore.lookup)  # as cloudtune.api does before planning
    plan = AzureLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    entry = plan.request["inputs"]["model"]
    assert entry == {"type": "uri_folder", "path": f"azureml://{path}", "mode": "ro_mount"}
    assert "'model=${{inputs.model}}'" in plan.request["command"]
    load(plan.request)

    spec = validate_spec({"name": "third", "inputs": {"train": "data/train.jsonl"},
                          "train": {"model": "job:other-1"}}, base_dir=tmp_path)
    spec = resolve_job_model(spec, "azure", JobStore.lookup)
    with pytest.raises(UnsupportedSpec, match="another Azure ML workspace") as info:
        AzureLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert "cloudtune download" in info.value.fix
