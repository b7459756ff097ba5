"""Golden plans of the local launcher: the whole request per scenario, so a diff shows what changed.

Regenerate after an intended change with CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_local.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

from cloudtune.bundle import build_bundle
from tests.golden import assert_golden
from cloudtune.local.launcher import LocalLauncher
from cloudtune.spec import LocalSettings, validate_spec

GOLDEN = Path(__file__).parent / "golden" / "local"
SUFFIX = "20260101-000000-abcd"


def project(tmp: Path) -> Path:
    (tmp / "data").mkdir(parents=True)
    (tmp / "data/train.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp / "data/eval.jsonl").write_text('{"text": "three"}\n')
    (tmp / "models/tiny").mkdir(parents=True)
    (tmp / "models/tiny/config.json").write_text('{"model_type": "gpt2"}')
    (tmp / "models/tiny/model.safetensors").write_bytes(placeholder_weights())  # the smallest weights and tokenizer
    (tmp / "models/tiny/tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)      # the preflight takes for them
    shutil.copytree(tmp / "models/tiny", tmp / "models/musicgen")
    (tmp / "models/musicgen/config.json").write_text('{"model_type": "musicgen"}')
    (tmp / "src").mkdir()
    (tmp / "src/train.py").write_text("print('hi')\n")
    (tmp / "clips").mkdir()  # text-to-audio: one 2 s clip (16-bit PCM, 8 kHz) with its description
    import wave
    with wave.open(str(tmp / "clips/tone.wav"), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(8000)
        clip.writeframes(b"\x00\x10" * 16000)
    (tmp / "clips/metadata.jsonl").write_text('{"file_name": "tone.wav", "text": "a steady tone"}\n')
    return tmp


SCENARIOS = {
    "quickstart-aws": ({"name": "quickstart", "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
                        "train": {"model": "./models/tiny"}}, "aws"),
    "quickstart-gcp": ({"name": "quickstart", "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
                        "train": {"model": "./models/tiny"}}, "gcp"),
    "quickstart-azure": ({"name": "quickstart", "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
                          "train": {"model": "./models/tiny"}}, "azure"),
    **{f"music-{cloud}": ({"name": "music", "inputs": {"train": "clips"},
                           "train": {"task": "text-to-audio", "model": "./models/musicgen", "lora": {"r": 8},
                                     "validation": {"prompts": ["a steady tone"], "every_steps": 10, "seconds": 1}}},
                          cloud) for cloud in ("aws", "gcp", "azure")},
    "command-2-nodes-aws": ({"name": "cmd", "resources": {"nodes": 2, "max_runtime": "90m"}, "retries": 2,
                             "inputs": {"train": "data/train.jsonl"}, "command": "python train.py", "code": "src",
                             "env": {"LOG_LEVEL": "info"},
                             "secrets": {"HF_TOKEN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf"}}, "aws"),
}


def normalise(text: str, tmp: Path, home: Path) -> str:
    return (text.replace(str(home), "<home>").replace(str(tmp), "<project>")
            .replace(f"local ({os.cpu_count()} CPUs)", "local (<n> CPUs)"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden_plan(tmp_path: Path, scenario: str) -> None:
    data, emulate = SCENARIOS[scenario]
    tmp = project(tmp_path / "p")
    home = tmp_path / "home"
    spec = validate_spec(data, base_dir=tmp)
    bundle = build_bundle(Path(spec.code), dest=tmp_path / "bundles") if spec.command else None
    plan = LocalLauncher(home=home).plan(spec, LocalSettings(emulate=emulate), suffix=SUFFIX, bundle=bundle)
    got = json.loads(normalise(plan.to_json(indent=2), tmp, home).replace(str(tmp_path / "bundles"), "<bundles>"))
    # how this machine's framework versions differ from the stock image is a fact of the machine, not of the plan
    got["notes"] = [n for n in got["notes"] if not n.startswith("warning: this machine differs")]
    assert_golden(GOLDEN / f"{scenario}.json", got)
    if spec.secrets:  # secrets travel by name and reference only
        text = json.dumps(got)
        assert "HF_TOKEN" in text and "arn:aws:secretsmanager" in text


def test_local_plan_warns_when_this_machine_differs_from_the_image(tmp_path: Path) -> None:
    """The aws stock image runs Python 3.12 and torch 2.8.0 (its wheel lock says so); this machine's versions are
    read from package metadata, and every difference is named in one warning note."""
    import sys
    from importlib.metadata import version

    from cloudtune.kit.versions import target_versions

    tmp = project(tmp_path / "p")
    spec = validate_spec(SCENARIOS["quickstart-aws"][0], base_dir=tmp)
    plan = LocalLauncher(home=tmp_path / "home").plan(spec, LocalSettings(emulate="aws"), suffix=SUFFIX)
    wanted = target_versions("sagemaker-pytorch-py312")
    here = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "torch": version("torch").split("+")[0]}
    warning = [n for n in plan.notes if n.startswith("warning: this machine differs")]
    differs = {k for k in here if here[k] != wanted[k]}
    assert bool(warning) == bool(differs)
    for name in differs:
        assert f"{name} {here[name]} here, {wanted[name]} on sagemaker-pytorch-py312" in warning[0]
