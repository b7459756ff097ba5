"""No absolute path of this machine appears in a compiled cloud request, and the emulated contracts carry what the
clouds write: Azure ML's MLFLOW_TRACKING_URI, Vertex's boot disk per machine series.

A compiled request travels to the cloud and into the job store: a local directory name there leaks the user's
layout and makes two users' identical jobs differ. Each cloud plugin is planned from the same spec (local data
files, a local model dir, a local code dir) in a temp dir, and the temp dir's path must not occur in the request.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from cloudtune.bundle import build_bundle
from cloudtune.contracts import azureml as az, vertex as vx
from cloudtune.local.launcher import LocalLauncher
from cloudtune.spec import LocalSettings, validate_spec
from tests.tiny_models import make_tiny_gpt2

SUFFIX = "20260101-000000-abcd"


def _write(base: Path) -> None:
    (base / "data/eval").mkdir(parents=True, exist_ok=True)
    (base / "data/train.jsonl").write_text('{"text": "the quick brown fox"}\n' * 20)
    (base / "data/eval/part-0.jsonl").write_text('{"text": "jumps over"}\n' * 5)
    if not (base / "model").exists():
        make_tiny_gpt2(base / "model")
    (base / "src").mkdir(exist_ok=True)
    (base / "src/train.py").write_text("print('training')\n")


def _specs(base: Path) -> dict[str, Any]:
    inputs = {"train": "data/train.jsonl", "eval": "data/eval"}
    return {
        "train": validate_spec({"name": "portable", "resources": {"accelerator": "T4:1"}, "inputs": inputs,
                                "train": {"model": "./model"}}, base_dir=base),
        "command": validate_spec({"name": "portable-cmd", "resources": {"accelerator": "T4:1"},
                                  "inputs": inputs, "command": "python train.py", "code": "src"}, base_dir=base),
    }


def _launcher(provider: str, home: Path, lock_dir: Path) -> tuple[Any, Any]:
    if provider == "aws":
        from cloudtune_aws.launcher import AwsLauncher
        from cloudtune_aws.settings import AwsSettings

        return AwsLauncher(home=home, lock_dir=lock_dir), AwsSettings(
            region="us-east-1", role="arn:aws:iam::123456789012:role/SageMakerExecution", bucket="cloudtune-test")
    if provider == "gcp":
        from cloudtune_gcp.launcher import GcpLauncher
        from cloudtune_gcp.settings import GcpSettings

        return GcpLauncher(home=home, lock_dir=lock_dir), GcpSettings(project="ml-proj", region="us-central1",
                                                                       bucket="gs://cloudtune-test/ct")
    from cloudtune_azure.launcher import AzureLauncher
    from cloudtune_azure.settings import AzureSettings

    return AzureLauncher(home=home, lock_dir=lock_dir), AzureSettings(
        subscription_id="00000000-1111-2222-3333-444444444444", resource_group="ml-rg", workspace="ml-ws")


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("kind", ["train", "command"])
def test_no_absolute_local_path_in_a_compiled_request(tmp_path: Path, lock_dir: Path, provider: str, kind: str) -> None:
    if importlib.util.find_spec(f"cloudtune_{provider}") is None:
        pytest.skip(f"cloudtune-{provider} is not installed")
    work = tmp_path / "users-own-dir"
    _write(work)
    spec = _specs(work)[kind]
    bundle = build_bundle(Path(spec.code), dest=tmp_path / "bundle") if spec.command else None
    launcher, settings = _launcher(provider, tmp_path / "home", lock_dir)
    plan = launcher.plan(spec, settings, suffix=SUFFIX, bundle=bundle)
    text = json.dumps(plan.request)
    assert "users-own-dir" not in text and str(tmp_path) not in text
    # the job still names each local input the way the user wrote it, relative to the spec's directory
    if kind == "train":
        sources = _runtime_job(provider, plan.request)["sources"]
        assert sources["train"] == "data/train.jsonl" and sources["eval"] == "data/eval"


def _runtime_job(provider: str, request: dict[str, Any]) -> dict[str, Any]:
    """The runtime job JSON as each request carries it (SageMaker hyperparameter, the Vertex container's args, the
    Azure ML command line), each after `--job-json`."""
    if provider == "aws":
        return json.loads(request["HyperParameters"]["cloudtune_job"])
    if provider == "gcp":
        args = request["customJob"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    else:
        args = shlex.split(request["command"])
    return json.loads(args[args.index(az.JOB_JSON_ARG) + 1])


def test_azure_emulation_sets_mlflow_tracking_uri_as_azure_ml_does(tmp_path: Path) -> None:
    _write(tmp_path)
    spec = _specs(tmp_path)["train"].model_copy(update={"resources": _specs(tmp_path)["train"].resources.model_copy(
        update={"accelerator": "cpu"})})
    plan = LocalLauncher(home=tmp_path / "home").plan(spec, LocalSettings(emulate="azure"), suffix=SUFFIX)
    for node in plan.request["nodes"]:
        uri = node["env"][az.MLFLOW_TRACKING_URI_VAR]
        assert uri.startswith("file://") and uri.endswith("/mlruns") and node["env"]["MLFLOW_ALLOW_FILE_STORE"] == "true"
        assert Path(uri[len("file://"):]).parent == Path(plan.request["job_dir"])


@pytest.mark.parametrize(("machine", "disk"), [("a3-ultragpu-8g", "hyperdisk-balanced"), ("a3-highgpu-8g", "pd-ssd"),
                                               ("g2-standard-8", "pd-ssd")])
def test_vertex_boot_disk_follows_the_machine_series(machine: str, disk: str) -> None:
    assert vx.boot_disk_type(machine) == disk


def test_vertex_h200_request_asks_for_hyperdisk(tmp_path: Path, lock_dir: Path) -> None:
    if importlib.util.find_spec("cloudtune_gcp") is None:
        pytest.skip("cloudtune-gcp is not installed")
    _write(tmp_path)
    spec = validate_spec({"name": "h200", "resources": {"accelerator": "H200:8"}, "inputs": {"train": "data/train.jsonl"},
                          "train": {"model": "gpt2"}}, base_dir=tmp_path)
    launcher, settings = _launcher("gcp", tmp_path / "home", lock_dir)
    pool = launcher.plan(spec, settings, suffix=SUFFIX).request["customJob"]["jobSpec"]["workerPoolSpecs"][0]
    assert pool["machineSpec"]["machineType"].startswith("a3-ultragpu")
    assert pool["diskSpec"]["bootDiskType"] == "hyperdisk-balanced"
