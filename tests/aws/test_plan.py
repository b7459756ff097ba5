"""Golden SageMaker requests per scenario, checked against botocore's CreateTrainingJob shape.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/aws/test_plan.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.staging import stage
from tests.golden import assert_golden
from tests.aws.conftest import ROLE, SUFFIX, settings, spec_from, write_data

from cloudtune_aws.launcher import BOOTSTRAP, AwsLauncher, map_status

GOLDEN = Path(__file__).parent / "golden"
S3_IN = {"train": "s3://datasets/sft/train.jsonl", "eval": "s3://datasets/sft/eval.jsonl"}


def scenarios(base: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (spec data, settings overrides)."""
    return {
        "text_to_image": ({"name": "img-style", "resources": {"accelerator": "L4:1", "max_runtime": "3h"},
                           "inputs": {"train": "s3://datasets/images/style/"},
                           "train": {"task": "text-to-image", "model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                      "lora": {"r": 16, "alpha": 16},
                                      "hyperparameters": {"resolution": 512, "max_steps": 1500, "batch_size": 4,
                                                          "learning_rate": 1e-4, "snr_gamma": 5.0},
                                      "data": {"random_flip": True, "caption_dropout": 0.05},
                                      "validation": {"prompts": ["a watercolor fox"], "every_steps": 250,
                                                     "seeds": [0, 1]}}}, {}),
        "preference_dpo_lora": ({"name": "dpo-l4", "resources": {"accelerator": "L4:1"}, "inputs": S3_IN,
                               "train": {"model": "Qwen/Qwen2.5-0.5B", "task": "preference", "lora": {"r": 16},
                                         "preference": {"method": "dpo", "beta": 0.1},
                                         "hyperparameters": {"optimizer": "adamw_torch_fused", "lr_scheduler": "cosine",
                                                             "warmup_steps": 10, "max_grad_norm": 0.5},
                                         "attn_implementation": "sdpa",
                                         "push_to_hub": {"repo": "acme/qwen-dpo", "revision": "dpo-v1"}},
                               "secrets": {"HF_TOKEN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token-AbCdEf"}}, {}),
        "text_to_audio": ({"name": "music-a10g", "resources": {"accelerator": "A10G:1", "max_runtime": "2h"},
                           "inputs": {"train": "s3://datasets/music/clips/"},
                           "train": {"task": "text-to-audio", "model": "facebook/musicgen-small", "lora": {"r": 16},
                                     "hyperparameters": {"batch_size": 2, "max_steps": 500},
                                     "audio": {"max_seconds": 30},
                                     "validation": {"prompts": ["lo-fi piano with soft drums"], "every_steps": 100,
                                                    "seeds": [0, 1], "seconds": 8}},
                           "checkpoint": {"every_steps": 100}}, {}),
        "single_gpu": ({"name": "sft-l4", "resources": {"accelerator": "L4:1", "max_runtime": "2h"}, "inputs": S3_IN,
                        "train": {"model": "gpt2"}}, {}),
        "multi_node_2x8": ({"name": "sft-h100", "resources": {"accelerator": "H100:8", "nodes": 2, "disk_gb": 500},
                            "inputs": S3_IN, "train": {"model": "meta-llama/Llama-3.2-1B"}}, {}),
        "spot_checkpoints_retries": ({"name": "sft-spot", "resources": {"accelerator": "A10G:1", "spot": True, "max_runtime": "6h"},
                                      "inputs": S3_IN, "train": {"model": "gpt2"}, "checkpoint": {"every_steps": 100, "keep": 3},
                                      "retries": 3, "outputs": "s3://team-artifacts/runs"}, {}),
        "custom_image_command": ({"name": "custom", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1.2",
                                  "resources": {"accelerator": "T4:4"}, "inputs": {"data": "s3://datasets/raw/"},
                                  "command": "python train.py --epochs 1", "code": str(base / "src"),
                                  "env": {"WANDB_MODE": "offline"}}, {}),
        "vpc_kms_tags": ({"name": "secure", "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trainer:1.2",
                          "resources": {"accelerator": "cpu", "instance_type": {"aws": "ml.m5.2xlarge"}},
                          "inputs": S3_IN, "train": {"model": "gpt2"}},
                         {"region": "eu-west-1", "subnets": ["subnet-0abc", "subnet-0def"], "security_groups": ["sg-0123"],
                          "kms_key": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                          "tags": {"team": "ml", "cost-center": "42"}, "network_isolation": True, "tensorboard": True,
                          "bucket": "s3://secure-bucket/cloudtune"}),
        "local_inputs": ({"name": "local-data", "resources": {"accelerator": "L4:1"},
                          "inputs": {"train": "data/train.jsonl", "eval": "data/eval"}, "train": {"model": "./model"},
                          "env": {"HF_HUB_OFFLINE": "1", "LONG": "x" * 600},
                          "secrets": {"HF_TOKEN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token-AbCdEf"}}, {}),
    }


def build(name: str, tmp_path: Path):
    write_data(tmp_path)
    data, extra = scenarios(tmp_path)[name]
    spec = spec_from(data, tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        (tmp_path / "user-bundles").mkdir(exist_ok=True)
        bundle = build_bundle(Path(spec.code), dest=tmp_path / "user-bundles")
    return AwsLauncher(home=tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX, bundle=bundle)


def normalise(plan, tmp: Path) -> dict[str, Any]:
    """The parts of a plan that must not drift, with machine-specific values replaced."""
    code = next(u for u in plan.uploads if "/bundles/" in u.destination)
    text = json.dumps({
        "request": plan.request,
        "uploads": [{"source": u.source, "destination": u.destination, "bytes": u.bytes if u is not code else "<bytes>",
                     "sha256": u.sha256} for u in plan.uploads],
        "instance_type": plan.instance_type,
        "instance_count": plan.instance_count,
        "estimated_usd_per_hour": plan.estimated_usd_per_hour,
        "model_uri": plan.model_uri,
    }, indent=2)
    # the code bundle carries a wheel of the running cloudtune: its hash changes with any core edit
    text = text.replace(code.sha256, "<bundle-sha256>").replace(str(tmp), "<tmp>")
    return json.loads(text)


@pytest.mark.parametrize("name", sorted(scenarios(Path("/x"))))
def test_golden_request(name: str, tmp_path: Path) -> None:
    got = normalise(build(name, tmp_path), tmp_path)
    assert_golden(GOLDEN / f"{name}.json", got)


# ------------------------------------------------------------------ the service model
def _shape():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model("CreateTrainingJob").input_shape


def walk(shape: Any, value: Any, path: str, problems: list[str]) -> None:
    """Enums, patterns (full match, with \\p classes via `regex`), lengths and ranges from the shape metadata."""
    import regex

    md = shape.metadata
    t = shape.type_name
    if t == "structure":
        for key in value:
            if key not in shape.members:
                problems.append(f"{path}.{key}: not a member of {shape.name}")
        for key in shape.required_members:
            if key not in value:
                problems.append(f"{path}.{key}: required")
        for key, sub in value.items():
            if key in shape.members:
                walk(shape.members[key], sub, f"{path}.{key}", problems)
        return
    if t == "list":
        if "min" in md and len(value) < md["min"] or "max" in md and len(value) > md["max"]:
            problems.append(f"{path}: {len(value)} items, allowed {md.get('min')}..{md.get('max')}")
        for i, item in enumerate(value):
            walk(shape.member, item, f"{path}[{i}]", problems)
        return
    if t == "map":
        if "min" in md and len(value) < md["min"] or "max" in md and len(value) > md["max"]:
            problems.append(f"{path}: {len(value)} entries, allowed {md.get('min')}..{md.get('max')}")
        for k, v in value.items():
            walk(shape.key, k, f"{path}<key {k}>", problems)
            walk(shape.value, v, f"{path}[{k}]", problems)
        return
    if t == "string":
        if "enum" in md and value not in md["enum"]:
            problems.append(f"{path}: {value!r} not in enum {shape.name}")
        if "min" in md and len(value) < md["min"] or "max" in md and len(value) > md["max"]:
            problems.append(f"{path}: length {len(value)}, allowed {md.get('min')}..{md.get('max')}")
        if "pattern" in md and regex.fullmatch(md["pattern"], value) is None:
            problems.append(f"{path}: {value!r} does not match {md['pattern']}")
        return
    if t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: not an integer")
        elif "min" in md and value < md["min"] or "max" in md and value > md["max"]:
            problems.append(f"{path}: {value} outside {md.get('min')}..{md.get('max')}")
        return
    if t == "boolean" and not isinstance(value, bool):
        problems.append(f"{path}: not a boolean")


@pytest.mark.parametrize("name", sorted(scenarios(Path("/x"))))
def test_request_fits_the_service_model(name: str, tmp_path: Path) -> None:
    from botocore.validate import validate_parameters

    pytest.importorskip("regex")
    request = build(name, tmp_path).request
    shape = _shape()
    validate_parameters(request, shape)  # raises ParamValidationError
    problems: list[str] = []
    walk(shape, request, "CreateTrainingJob", problems)
    assert problems == []


def test_walker_catches_what_botocore_does_not(tmp_path: Path) -> None:
    request = json.loads(json.dumps(build("custom_image_command", tmp_path).request))
    request["ResourceConfig"]["InstanceType"] = "ml.not.a.type"
    request["Tags"].append({"Key": "bad#key", "Value": "v"})
    request["AlgorithmSpecification"]["ContainerArguments"].append("y" * 300)
    problems: list[str] = []
    walk(_shape(), request, "R", problems)
    assert len(problems) == 3, problems


# ------------------------------------------------------------------ plan rules
def test_plan_imports_no_sdk(tmp_path: Path) -> None:
    write_data(tmp_path)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "sys.path[:0] = [%r, %r]\n"
        "from tests.aws.conftest import settings, spec_from\n"
        "from cloudtune_aws.launcher import AwsLauncher\n"
        "spec = spec_from({'name': 'x', 'inputs': {'train': 'data/train.jsonl'}, 'train': {'model': 'gpt2', 'data': {'eval': None}}}, Path(%r))\n"
        "AwsLauncher(home=Path(%r)).plan(spec, settings(), suffix='20260101-000000-abcd')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'sagemaker', 'torch', 'transformers', 's3transfer')]\n"
        "print(json.dumps(bad))\n"
    ) % (str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "launchers/aws"),
         str(tmp_path), str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_role_and_bucket_fail_at_plan_time(tmp_path: Path) -> None:
    spec = spec_from({"name": "x", "inputs": S3_IN, "train": {"model": "gpt2"}}, tmp_path)
    for key in ("role", "bucket", "region"):
        with pytest.raises(UnsupportedSpec) as err:
            AwsLauncher(home=tmp_path).plan(spec, settings(**{key: None}), suffix=SUFFIX)
        assert f"providers.aws.{key}" in str(err.value) and f"CLOUDTUNE_AWS_{key.upper()}" in str(err.value)
    with pytest.raises(UnsupportedSpec, match="CLOUDTUNE_AWS_ROLE"):
        AwsLauncher(home=tmp_path).plan(spec, settings(role=None), suffix=SUFFIX)


def test_tpu_is_rejected_with_a_fix_naming_gcp(tmp_path: Path) -> None:
    spec = spec_from({"name": "x", "resources": {"accelerator": "TPU-v5e:8"}, "inputs": S3_IN, "train": {"model": "gpt2"}}, tmp_path)
    with pytest.raises(UnsupportedSpec) as err:
        AwsLauncher(home=tmp_path).plan(spec, settings(), suffix=SUFFIX)
    assert "TPU" in str(err.value) and "To fix:" in str(err.value) and "gcp" in str(err.value)
    assert AwsLauncher.capabilities.tpu.supported is False


@pytest.mark.parametrize("data, match", [
    ({"inputs": {"train": "gs://b/train.jsonl"}}, "not on S3"),
    ({"outputs": "gs://b/out"}, "not an s3:// URI"),
    ({"inputs": {"train": "s3://b/t", "code": "s3://b/c"}}, "reserved"),
    ({"secrets": {"TOKEN": "projects/p/secrets/s/versions/1"}}, "Secrets Manager"),
])
def test_unsupported_specs(tmp_path: Path, data: dict[str, Any], match: str) -> None:
    base = {"name": "x", "inputs": {"train": "s3://b/t"}, "train": {"model": "gpt2", "data": {"eval": None}}}
    spec = spec_from({**base, **data}, tmp_path)
    with pytest.raises(UnsupportedSpec, match=match):
        AwsLauncher(home=tmp_path).plan(spec, settings(), suffix=SUFFIX)


def test_big_runtime_job_spills_into_the_bundle(tmp_path: Path) -> None:
    write_data(tmp_path)
    env = {f"VAR_{i}": "v" * 100 for i in range(40)}  # > 2500 characters of job JSON
    spec = spec_from({"name": "big", "inputs": S3_IN, "train": {"model": "gpt2"}, "env": env}, tmp_path)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    for up in plan.uploads:
        if up.build and up.build["kind"] == "code-bundle":
            stage(up)  # what submit() does first (the wheelhouse is left out: fetching it needs PyPI)
    value = plan.request["HyperParameters"]["cloudtune_job"]
    assert value == "/opt/ml/code/.cloudtune/job.json"  # script mode extracts the bundle into /opt/ml/code
    assert any("job.json" in n for n in plan.notes)
    code = next(u for u in plan.uploads if "/bundles/" in u.destination)
    # what the training toolkit does: unpack the bundle, then cloudtune-run reads the path
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-xzf", code.source, "-C", str(out), ".cloudtune"], check=True)
    job = json.loads((out / ".cloudtune/job.json").read_text())
    assert job["env"] == env and job["inputs"] == {"eval": "/opt/ml/input/data/eval", "train": "/opt/ml/input/data/train"}
    assert list((out / ".cloudtune").glob("cloudtune-*-py3-none-any.whl"))
    from cloudtune.runtime.context import RunArgs, _job

    assert _job(RunArgs(), str(out / ".cloudtune/job.json")) == job


def test_bootstrap_fits_and_the_wheel_installs(tmp_path: Path) -> None:
    assert len(BOOTSTRAP) <= 256
    from cloudtune.kit.wheel import cloudtune_wheel

    w1 = cloudtune_wheel(tmp_path / "a")
    w2 = cloudtune_wheel(tmp_path / "b")
    assert w1.path.read_bytes() == w2.path.read_bytes()  # deterministic: same bundle hash on any machine
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "--target", str(target), str(w1.path)], check=True)
    assert (target / "cloudtune/entrypoint.py").is_file()
    assert (target / "cloudtune/catalog/offers.csv").is_file()
    assert (target / "bin/cloudtune-run").is_file()
    meta = next(target.glob("cloudtune-*.dist-info")) / "METADATA"
    assert "Requires-Dist: pydantic" in meta.read_text() and 'extra == "train"' in meta.read_text()


def test_stock_image_uri_sdk_and_fallback_agree() -> None:
    from cloudtune_aws.images import FRAMEWORK_VERSION, image_table, sdk_config_path, training_image_uri

    fallback = image_table(FRAMEWORK_VERSION, use_sdk=False)
    assert training_image_uri("us-east-1", "gpu", fallback) == \
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    if sdk_config_path() is None:
        pytest.skip("sagemaker SDK not installed")
    sdk = image_table(FRAMEWORK_VERSION, use_sdk=True)
    assert sdk.from_sdk
    for region in sorted(set(sdk.registries) | set(fallback.registries)):
        for proc in ("cpu", "gpu"):
            assert training_image_uri(region, proc, sdk) == training_image_uri(region, proc, fallback)


def test_metric_definitions_match_the_recipe_log_lines(tmp_path: Path) -> None:
    from cloudtune.contracts.logfmt import EVAL_LOG_FORMAT, STEP_LOG_FORMAT

    defs = {d["Name"]: d["Regex"] for d in build("single_gpu", tmp_path).request["AlgorithmSpecification"]["MetricDefinitions"]}
    step = STEP_LOG_FORMAT.format(step=10, loss=2.3141, learning_rate=4e-05, epoch=0.5)
    ev = EVAL_LOG_FORMAT.format(when="after", eval_loss=2.01, perplexity=7.46)
    assert float(re.search(defs["train_loss"], step).group(1)) == 2.3141
    assert float(re.search(defs["learning_rate"], step).group(1)) == 4e-05
    assert float(re.search(defs["eval_loss"], ev).group(1)) == 2.01


def test_cost_and_model_uri(tmp_path: Path) -> None:
    plan = build("multi_node_2x8", tmp_path)
    assert plan.instance_type == "ml.p5.48xlarge" and plan.instance_count == 2
    assert plan.estimated_usd_per_hour == pytest.approx(2 * 113.07)
    assert plan.model_uri == f"s3://cloudtune-test/output/{plan.job_name}/output/model.tar.gz"
    job = json.loads(plan.request["HyperParameters"]["cloudtune_job"])
    assert job["processes_per_node"] == 8
    assert ROLE == plan.request["RoleArn"]


def test_no_secret_value_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SUPERSECRETVALUE")
    plan = build("local_inputs", tmp_path)
    for up in plan.uploads:
        if up.build and up.build["kind"] == "code-bundle":
            stage(up)  # the bundle is built; the wheelhouse (public wheels, fetched from PyPI) is not
    assert "hf_SUPERSECRETVALUE" not in plan.to_json()
    code = next(u for u in plan.uploads if "/bundles/" in u.destination)
    with tarfile.open(code.source) as tar:
        for m in tar.getmembers():
            assert b"hf_SUPERSECRETVALUE" not in tar.extractfile(m).read()


@pytest.mark.parametrize("described, state", [
    ({"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"}, "pending"),
    ({"TrainingJobStatus": "InProgress", "SecondaryStatus": "Downloading"}, "pending"),
    ({"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"}, "running"),
    ({"TrainingJobStatus": "InProgress", "SecondaryStatus": "Uploading"}, "running"),
    ({"TrainingJobStatus": "Stopping", "SecondaryStatus": "Stopping"}, "running"),
    ({"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"}, "succeeded"),
    ({"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed", "FailureReason": "AlgorithmError: boom"}, "failed"),
    ({"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"}, "cancelled"),
    ({"TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxRuntimeExceeded"}, "failed"),
])
def test_status_mapping(described: dict[str, Any], state: str) -> None:
    st = map_status(described)
    assert st.state == state
    if "FailureReason" in described:
        assert st.failure_reason == "AlgorithmError: boom"


@pytest.mark.parametrize("package, accelerator, train", [
    ("deepspeed", "A100-80GB:8", {"distributed": "deepspeed-zero2"}),
    ("flash-attn", "A10G:1", {"attn_implementation": "flash_attention_2"}),
])
def test_a_package_the_stock_dlc_may_lack_is_said_in_the_plan(tmp_path: Path, package: str, accelerator: str,
                                                               train: dict) -> None:
    """The SageMaker PyTorch DLC's contents are not documented to include deepspeed or flash-attn, and no lock can
    add either."""
    spec = spec_from({"name": "pkg", "resources": {"accelerator": accelerator}, "inputs": S3_IN,
                      "train": {"model": "gpt2", **train}}, tmp_path)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    [note] = [n for n in plan.notes if package in n]
    assert "does not carry it" in note and "image:" in note
