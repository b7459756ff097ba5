"""One contract every launcher meets (local always; each cloud plugin when installed), and the registry.

A launcher's plan() is pure: no network, no cloud SDK import, no mutation of the spec or os.environ,
the same output for the same inputs, JSON-ready, secrets by reference only. Its capabilities all carry
reasons; an unsupported spec is refused at plan time with a fix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import InvalidInput, UnsupportedSpec
from cloudtune.launcher import BUILTIN_LAUNCHERS, Capabilities, available_launchers, launcher_class
from cloudtune.spec import validate_spec

AWS_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tok"
SECRET_REFS = {"gcp": "projects/proj/secrets/tok/versions/1", "azure": "https://vault1.vault.azure.net/secrets/tok"}


def secret_ref(name: str) -> str:
    """A secret reference of the kind the provider's secret store uses (local reads the environment)."""
    return SECRET_REFS.get(name, AWS_SECRET)

SDK_PREFIXES = ("boto3", "botocore", "sagemaker", "google.cloud", "azure")

SETTINGS: dict[str, dict[str, Any]] = {
    "local": {},
    "aws": {"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/SageMaker", "bucket": "s3://bucket/cloudtune"},
    "gcp": {"project": "proj", "region": "us-central1", "bucket": "gs://bucket/cloudtune"},
    "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg", "workspace": "ws"},
}


def installed() -> list[str]:
    names = []
    for name, target in BUILTIN_LAUNCHERS.items():
        if importlib.util.find_spec(target.split(":")[0].split(".")[0]) is not None:
            names.append(name)
    return names


@pytest.fixture(params=installed())
def launcher_name(request: pytest.FixtureRequest) -> str:
    return request.param


def make_spec(tmp_path: Path, name: str, **extra: Any):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data/train.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src/train.py").write_text("print(1)\n")
    data = {
        "name": "contract",
        "inputs": {"train": "data/train.jsonl"},
        "command": "python train.py",
        "code": "src",
        "secrets": {"TOKEN": secret_ref(name)},
        "env": {"PLAIN": "1"},
        "providers": {name: SETTINGS[name]} if name != "local" else {},
        **extra,
    }
    return validate_spec(data, base_dir=tmp_path)


def plan_for(name: str, spec: Any, tmp_path: Path, suffix: str = "20260101-000000-abcd"):
    from cloudtune.bundle import build_bundle
    from cloudtune.settings import provider_settings

    cls = launcher_class(name)
    launcher = cls(home=tmp_path / "home") if name == "local" else cls()
    settings = provider_settings(name, spec, launcher.settings_model, environ={"CLOUDTUNE_HOME": str(tmp_path / "home")})
    bundle = build_bundle(Path(spec.code), dest=tmp_path / "bundles")
    return launcher, launcher.plan(spec, settings, suffix=suffix, bundle=bundle)


def test_plan_is_pure_deterministic_and_json(launcher_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(tmp_path, launcher_name)
    before_spec = spec.model_dump_json()
    before_env = dict(os.environ)
    sdk_before = {m for m in sys.modules if m.startswith(SDK_PREFIXES)}

    def no_network(*_a: Any, **_k: Any) -> None:
        raise AssertionError("plan() opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    _, a = plan_for(launcher_name, spec, tmp_path)
    _, b = plan_for(launcher_name, spec, tmp_path)
    monkeypatch.undo()
    assert a.to_dict() == b.to_dict()
    assert spec.model_dump_json() == before_spec
    assert dict(os.environ) == before_env
    assert {m for m in sys.modules if m.startswith(SDK_PREFIXES)} == sdk_before, "plan() imported a cloud SDK"
    text = json.dumps(a.to_dict())
    assert a.provider == launcher_name and a.job_name.startswith("contract-")
    assert "20260101-000000-abcd" in a.job_name
    assert secret_ref(launcher_name) in text  # the reference travels; its value cannot (it is never known to plan)
    for up in a.uploads:
        assert up.bytes > 0 and len(up.sha256) == 64


def test_capabilities_have_reasons(launcher_name: str) -> None:
    caps = launcher_class(launcher_name).capabilities
    assert isinstance(caps, Capabilities)
    for name, cap in caps.to_dict().items():
        assert isinstance(cap["supported"], bool) and len(cap["reason"]) > 10, name


def test_unsupported_spec_is_refused_with_a_fix(launcher_name: str, tmp_path: Path) -> None:
    caps = launcher_class(launcher_name).capabilities
    if caps.tpu.supported:
        pytest.skip("this launcher supports TPUs")
    spec = make_spec(tmp_path, launcher_name, resources={"accelerator": "TPU-v5e:4"})
    with pytest.raises(UnsupportedSpec) as info:
        plan_for(launcher_name, spec, tmp_path)
    assert info.value.fix and "gcp" in str(info.value)


def test_missing_input_and_non_model_dir_are_refused_before_upload(launcher_name: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, launcher_name, inputs={"train": "data/train.jsonl", "extra": "data/absent.jsonl"})
    with pytest.raises(UnsupportedSpec) as info:
        plan_for(launcher_name, spec, tmp_path)
    assert "extra" in str(info.value) and "absent.jsonl" in str(info.value) and info.value.fix

    (tmp_path / "models/empty").mkdir(parents=True)
    spec = make_spec(tmp_path, launcher_name, command=None,
                     train={"model": "./models/empty", "data": {"train": "train"}})
    with pytest.raises(UnsupportedSpec) as info:
        plan_for(launcher_name, spec, tmp_path)
    assert str(info.value).startswith("train.model:") and "save_pretrained" in info.value.fix


def test_registry_unknown_and_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="did you mean 'local'"):
        launcher_class("locl")
    # a third-party plugin, installed as a distribution with entry points
    dist = tmp_path / "site" / "cloudtune_k8s-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudtune-k8s\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[cloudtune.launchers]\nk8s = cloudtune_k8s_plugin:K8sLauncher\nlocal = cloudtune_k8s_plugin:Hijack\n"
    )
    (tmp_path / "site" / "cloudtune_k8s_plugin.py").write_text("class K8sLauncher:\n    name = 'k8s'\nclass Hijack:\n    name = 'hijack'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = available_launchers()
    assert names["k8s"] == "cloudtune_k8s_plugin:K8sLauncher"
    assert names["local"] == BUILTIN_LAUNCHERS["local"]  # plugins never replace a built-in
    assert launcher_class("k8s").name == "k8s"
    assert launcher_class("local").name == "local"
