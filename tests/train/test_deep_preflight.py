"""`cloudtune validate --deep` (and `cloudtune launch` of a local job): the tokenizer and the model skeleton are
loaded and one record of each shape is rendered, so template, LoRA and tokenizer problems are one line before any
job starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudtune.cli import main
from cloudtune.store import JobStore

from .test_job_inputs import GEMMA_STYLE, MISTRAL_STYLE


def chat(*roles: str) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": f"{r} says hi"} for r in roles]}


def project(tmp: Path, model: Path, train: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    shutil.copytree(model, tmp / "models/tiny")
    (tmp / "data").mkdir(parents=True)
    (tmp / "data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = {"name": "deep", "inputs": {"train": "data/train.jsonl"},
            "train": {"model": "./models/tiny", "hyperparameters": {"max_steps": 1, "max_seq_len": 64}, **train}}
    (tmp / "job.yaml").write_text(json.dumps(spec))
    return tmp / "job.yaml"


def deep(spec: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.chdir(spec.parent)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(spec.parent / "home"))
    return CliRunner().invoke(main, [*(args or ("validate", "--deep")), spec.name])


@pytest.mark.parametrize("train, records, expected", [
    ({"data": {"format": "chat", "chat_template": GEMMA_STYLE}}, [chat("system", "user", "assistant")] * 3,
     "data/train.jsonl, line 1: the chat template (train.data.chat_template) refused this conversation: System role "
     "not supported; merge the system message into the first user turn"),
    ({"data": {"format": "chat", "chat_template": MISTRAL_STYLE}},
     [chat("user", "assistant")] * 4 + [chat("user", "user", "assistant")],
     "data/train.jsonl, line 5: the chat template (train.data.chat_template) refused this conversation: Conversation "
     "roles must alternate"),
    ({"data": {"format": "chat"}}, [chat("user", "assistant")],
     "train.data.chat_template: the chat data format needs a chat template, and this model's tokenizer has none"),
    ({"lora": {"target_modules": ["q_proj", "v_proj"]}}, [{"text": "hello"}],
     "train.lora.target_modules: 'q_proj', 'v_proj' match no Linear module of this model; Linear modules in this "
     "model: c_attn, c_fc, c_proj"),
])
def test_deep_problems_are_one_line(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    train: dict[str, Any], records: list[dict[str, Any]], expected: str) -> None:
    result = deep(project(tmp_path, tiny_gpt2, train, records), monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.output


def test_deep_ok_lists_what_it_checked(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [chat("system", "user", "assistant"), chat("user", "assistant", "user", "assistant")] * 3
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    result = deep(project(tmp_path, tiny_gpt2, {"data": {"format": "chat", "chat_template": template},
                                                 "lora": {}}, records), monkeypatch)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "GPT2LMHeadModel skeleton loaded" in out and "LoRA target modules: c_attn, c_proj, c_fc" in out
    assert "train: chat data: 2 record shape(s) rendered and tokenized" in out and out.rstrip().splitlines()[-1].startswith("ok: deep")


def test_skeleton_is_on_the_meta_device(tiny_gpt2: Path, tmp_path: Path) -> None:
    """No weights are read: the deep check passes even when the weights file is damaged."""
    from cloudtune.preflight.deep import load_skeleton
    from cloudtune.spec import TrainSpec

    model_dir = shutil.copytree(tiny_gpt2, tmp_path / "m")
    (model_dir / "model.safetensors").write_bytes(b"not weights")
    _, model = load_skeleton(str(model_dir), "m", TrainSpec.model_validate({"model": "m"}), True, None)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_local_launch_runs_the_deep_check_before_any_job(tiny_gpt2: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = project(tmp_path, tiny_gpt2, {"data": {"format": "chat", "chat_template": GEMMA_STYLE}},
                   [chat("system", "user", "assistant")])
    result = deep(spec, monkeypatch, "launch")
    assert result.exit_code == 2 and "System role not supported" in result.output
    assert JobStore(tmp_path / "home").list() == []  # nothing was submitted
