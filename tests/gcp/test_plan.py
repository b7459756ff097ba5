"""Golden Vertex AI CustomJob requests per scenario, parsed by the SDK's own types and checked against the catalog.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/gcp/test_plan.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudtune.catalog import load_catalog
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.states import SAGEMAKER, VERTEX
from tests.gcp.conftest import SUFFIX, settings, spec_from, write_data
from tests.golden import assert_golden

from cloudtune_gcp.launcher import GcpLauncher

GOLDEN = Path(__file__).parent / "golden"
GS_IN = {"train": "gs://datasets/sft/train.jsonl", "eval": "gs://datasets/sft/eval.jsonl"}
KMS = "projects/ml-proj/locations/us-central1/keyRings/ring/cryptoKeys/key"


def scenarios(base: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (spec data, settings overrides)."""
    return {
        "text_to_image": ({"name": "img-style", "resources": {"accelerator": "L4:1", "max_runtime": "3h"},
                           "inputs": {"train": "gs://datasets/images/style/"},
                           "train": {"task": "text-to-image", "model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                      "lora": {"r": 16, "alpha": 16},
                                      "hyperparameters": {"resolution": 512, "max_steps": 1500, "batch_size": 4,
                                                          "learning_rate": 1e-4, "snr_gamma": 5.0},
                                      "data": {"random_flip": True, "caption_dropout": 0.05},
                                      "validation": {"prompts": ["a watercolor fox"], "every_steps": 250,
                                                     "seeds": [0, 1]}}}, {}),
        "preference_dpo_lora": ({"name": "dpo-l4", "resources": {"accelerator": "L4:1"}, "inputs": GS_IN,
                               "train": {"model": "Qwen/Qwen2.5-0.5B", "task": "preference", "lora": {"r": 16},
                                         "preference": {"method": "dpo", "beta": 0.1},
                                         "hyperparameters": {"optimizer": "adamw_torch_fused", "lr_scheduler": "cosine",
                                                             "warmup_steps": 10, "max_grad_norm": 0.5},
                                         "attn_implementation": "sdpa",
                                         "push_to_hub": {"repo": "acme/qwen-dpo", "revision": "dpo-v1"}},
                               "secrets": {"HF_TOKEN": "projects/p/secrets/hf-token/versions/1"}}, {}),
        "text_to_audio": ({"name": "music-l4", "resources": {"accelerator": "L4:1", "max_runtime": "2h"},
                           "inputs": {"train": "gs://datasets/music/clips/"},
                           "train": {"task": "text-to-audio", "model": "facebook/musicgen-small", "lora": {"r": 16},
                                     "hyperparameters": {"batch_size": 2, "max_steps": 500},
                                     "audio": {"max_seconds": 30},
                                     "validation": {"prompts": ["lo-fi piano with soft drums"], "every_steps": 100,
                                                    "seeds": [0, 1], "seconds": 8}},
                           "checkpoint": {"every_steps": 100}}, {}),
        "single_l4": ({"name": "sft-l4", "resources": {"accelerator": "L4:1", "max_runtime": "2h"}, "inputs": GS_IN,
                       "train": {"model": "gpt2"}}, {}),
        "multi_node_2x8_h100_spot": ({"name": "sft-h100", "resources": {"accelerator": "H100:8", "nodes": 2, "spot": True,
                                                                        "disk_gb": 500},
                                      "inputs": GS_IN, "train": {"model": "meta-llama/Llama-3.2-1B"}, "retries": 3}, {}),
        "tpu_v5e_2x2": ({"name": "sft-tpu", "resources": {"accelerator": "TPU-v5e:4"}, "inputs": GS_IN,
                         "train": {"model": "gpt2"}}, {}),
        "custom_image_command": ({"name": "custom", "image": "us-docker.pkg.dev/ml-proj/train/trainer:1.2",
                                  "resources": {"accelerator": "T4:4"}, "inputs": {"data": "gs://datasets/raw/"},
                                  "command": "python train.py --epochs 1", "code": str(base / "src"),
                                  "env": {"WANDB_MODE": "offline"}}, {}),
        "kms_network_sa_labels": ({"name": "secure", "resources": {"accelerator": "A100-80GB:1"}, "inputs": GS_IN,
                                   "train": {"model": "gpt2"},
                                   "secrets": {"HF_TOKEN": "projects/ml-proj/secrets/hf-token/versions/3"}},
                                  {"region": "europe-west4", "kms_key": KMS,
                                   "network": "projects/123456789012/global/networks/private",
                                   "service_account": "trainer@ml-proj.iam.gserviceaccount.com",
                                   "tensorboard": "projects/ml-proj/locations/europe-west4/tensorboards/42",
                                   "labels": {"team": "ml", "cost-center": "42"}}),
    }


def build(name: str, tmp_path: Path):
    write_data(tmp_path)
    data, extra = scenarios(tmp_path)[name]
    spec = spec_from(data, tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        bundle = build_bundle(Path(spec.code))
    return GcpLauncher(home=tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX, bundle=bundle)


def normalise(plan, tmp: Path) -> dict[str, Any]:
    """The parts of a plan that must not drift; the code bundle's hash (it carries a wheel of the running
    cloudtune, so it changes with any core edit) and temp paths replaced."""
    code = next(u for u in plan.uploads if "/bundles/" in u.destination)
    text = json.dumps({
        "request": plan.request,
        "uploads": [{"source": u.source, "destination": u.destination, "bytes": u.bytes if u is not code else "<bytes>",
                     "sha256": u.sha256} for u in plan.uploads],
        "instance_type": plan.instance_type, "instance_count": plan.instance_count,
        "estimated_usd_per_hour": plan.estimated_usd_per_hour, "model_uri": plan.model_uri, "notes": list(plan.notes),
    }, indent=2)
    return json.loads(text.replace(code.sha256, "<bundle-sha256>").replace(str(tmp), "<tmp>"))


@pytest.mark.parametrize("name", sorted(scenarios(Path("/x"))))
def test_golden_request(name: str, tmp_path: Path) -> None:
    assert_golden(GOLDEN / f"{name}.json", normalise(build(name, tmp_path), tmp_path))


@pytest.mark.parametrize("name", sorted(scenarios(Path("/x"))))
def test_request_parses_as_the_sdk_custom_job(name: str, tmp_path: Path) -> None:
    """The body is a CustomJob by the SDK's own proto types: unknown fields and bad enum names are errors."""
    from google.cloud.aiplatform_v1.types import AcceleratorType, CreateCustomJobRequest, CustomJob

    plan = build(name, tmp_path)
    job = CustomJob.from_json(json.dumps(plan.request["customJob"]), ignore_unknown_fields=False)
    CreateCustomJobRequest(parent=plan.request["parent"], custom_job=job)
    catalog = load_catalog()
    for pool in job.job_spec.worker_pool_specs:
        offer = catalog.by_instance_type("gcp", pool.machine_spec.machine_type)
        assert offer is not None, pool.machine_spec.machine_type
        if offer.tpu_topology:
            assert pool.machine_spec.tpu_topology == offer.tpu_topology
            assert pool.machine_spec.accelerator_type == AcceleratorType.ACCELERATOR_TYPE_UNSPECIFIED
        elif offer.count:
            assert pool.machine_spec.accelerator_type.name == offer.accelerator_type
            assert pool.machine_spec.accelerator_count == offer.count
    assert job.job_spec.worker_pool_specs[0].replica_count == 1  # the chief
    assert sum(p.replica_count for p in job.job_spec.worker_pool_specs) == plan.instance_count


def test_bad_enum_and_unknown_field_are_caught_by_the_sdk_types() -> None:
    from google.cloud.aiplatform_v1.types import CustomJob

    with pytest.raises(Exception):
        CustomJob.from_json(json.dumps({"displayName": "x", "jobSpec": {"workerPoolSpecs": [
            {"machineSpec": {"machineType": "ct5p-hightpu-4t", "acceleratorType": "TPU_V5P"}}]}}))
    with pytest.raises(Exception):
        CustomJob.from_json(json.dumps({"displayName": "x", "jobSpek": {}}))


def test_every_catalog_gpu_type_is_an_sdk_enum_value_and_tpus_send_none() -> None:
    from google.cloud.aiplatform_v1.types import AcceleratorType

    names = {a.name for a in AcceleratorType}
    for offer in load_catalog().offers("gcp"):
        if offer.tpu_topology:
            assert offer.accelerator.startswith("TPU-") and "x" in offer.tpu_topology
        elif offer.count:
            assert offer.accelerator_type in names, offer


def test_every_native_state_maps() -> None:
    """Every state of the SDKs' own enums is in the kit's tables (Vertex JobState; SageMaker TrainingJobStatus)."""
    from google.cloud.aiplatform_v1.types import JobState

    assert {s.name for s in JobState} == set(VERTEX)
    botocore = pytest.importorskip("botocore.session")
    model = botocore.get_session().get_service_model("sagemaker")
    assert set(model.shape_for("TrainingJobStatus").enum) == set(SAGEMAKER)


def test_plan_imports_no_sdk_and_writes_nothing(tmp_path: Path) -> None:
    before = {m for m in sys.modules if m.startswith(("google.cloud", "google.api_core"))}
    plan = build("custom_image_command", tmp_path)
    assert {m for m in sys.modules if m.startswith(("google.cloud", "google.api_core"))} == before
    assert not (tmp_path / "home").exists()  # the bundle is named, not written
    code = next(u for u in plan.uploads if "/bundles/" in u.destination)
    assert code.build is not None and code.source.endswith(f"{code.sha256}.tar.gz")


@pytest.mark.parametrize("data, extra, needle", [
    ({"resources": {"accelerator": "TPU-v5e:4", "nodes": 2}}, {}, "multi-host"),
    ({"inputs": {"train": "s3://b/train.jsonl"}}, {}, "not on Cloud Storage"),
    ({"secrets": {"T": "arn:aws:secretsmanager:us-east-1:123456789012:secret:t"}}, {}, "Secret Manager"),
    ({}, {"tensorboard": "projects/p/locations/l/tensorboards/1"}, "service_account"),
    ({}, {"labels": {"Team": "ML"}}, "label"),
    ({"outputs": "s3://b/out"}, {}, "gs://"),
])
def test_unsupported_specs_are_refused_with_a_fix(tmp_path: Path, data: dict[str, Any], extra: dict[str, Any], needle: str) -> None:
    write_data(tmp_path)
    base = {"name": "bad", "inputs": GS_IN, "train": {"model": "gpt2"}}
    spec = spec_from({**base, **data}, tmp_path)
    with pytest.raises(UnsupportedSpec) as info:
        GcpLauncher(home=tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX)
    assert needle in str(info.value) and info.value.fix


def test_all_missing_settings_in_one_error(tmp_path: Path) -> None:
    from cloudtune_gcp.settings import GcpSettings

    spec = spec_from({"name": "x", "inputs": GS_IN, "train": {"model": "gpt2"}}, tmp_path)
    with pytest.raises(UnsupportedSpec) as info:
        GcpLauncher(home=tmp_path).plan(spec, GcpSettings(), suffix=SUFFIX)
    text = str(info.value)
    assert all(f"providers.gcp.{k}" in text for k in ("project", "region", "bucket")) and "GOOGLE_CLOUD_PROJECT" in text


def test_flash_attention_on_cloudtunes_own_gpu_image_is_refused_before_upload(tmp_path: Path) -> None:
    """Vertex `train:` jobs run cloudtune's own GPU image, which has no flash-attn (no wheel lock can carry it)."""
    train = {"model": "gpt2", "attn_implementation": "flash_attention_2"}
    spec = spec_from({"name": "fa", "resources": {"accelerator": "H100:1"}, "inputs": GS_IN, "train": train}, tmp_path)
    with pytest.raises(UnsupportedSpec, match="has no flash-attn") as err:
        GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert "attn_implementation: sdpa" in err.value.fix and not (tmp_path / "home" / "bundles").exists()
    own_image = spec_from({"name": "fa", "resources": {"accelerator": "H100:1"}, "inputs": GS_IN, "train": train,
                           "image": "us-docker.pkg.dev/p/r/trainer-with-flash-attn:1"}, tmp_path)
    plan = GcpLauncher(home=tmp_path / "home").plan(own_image, settings(), suffix=SUFFIX)
    assert not any("flash-attn" in note for note in plan.notes)  # the user's image: theirs to carry it


def test_deepspeed_on_cloudtunes_own_gpu_image_is_refused_before_upload(tmp_path: Path) -> None:
    """Vertex `train:` jobs run cloudtune's own GPU image, which has no deepspeed (no wheel lock can carry it)."""
    spec = spec_from({"name": "ds", "resources": {"accelerator": "H100:8"}, "inputs": GS_IN,
                      "train": {"model": "gpt2", "distributed": "deepspeed-zero3"}}, tmp_path)
    with pytest.raises(UnsupportedSpec, match="has no deepspeed") as err:
        GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert "image:" in err.value.fix and not (tmp_path / "home" / "bundles").exists()
    own_image = spec_from({"name": "ds", "resources": {"accelerator": "H100:8"}, "inputs": GS_IN,
                           "image": "us-docker.pkg.dev/p/r/trainer-with-deepspeed:1",
                           "train": {"model": "gpt2", "distributed": "deepspeed-zero3"}}, tmp_path)
    plan = GcpLauncher(home=tmp_path / "home").plan(own_image, settings(), suffix=SUFFIX)
    assert not any("deepspeed" in note for note in plan.notes)  # the user's image: theirs to carry it
