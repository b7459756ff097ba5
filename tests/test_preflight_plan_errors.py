"""Issue 12 (round 2) kinds 1 and 2 at plan time: refusals the recipe makes in the job that the spec, the catalog
and a data sample decide are made by `validate` and every dry run (precision per accelerator, QLoRA on a TPU,
adapter rules, chat templates on every conversational shape, broken weight and tokenizer files), and documented
inputs are read as the runtime reads them (save_to_disk directories, message fields such as reasoning_content),
a field the template cannot place refused by name. Cases 21 and 22 of ../shared/cases are members."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudtune.catalog import load_catalog
from cloudtune.catalog.precision import bf16_native, precision_problem, resolve
from tests.test_preflight import NO_SYSTEM, model_dir, problems, spec_for, write
from tests.tiny_models import make_tiny_gpt2

CASES = Path("/work/shared/cases")


def cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "CLOUDTUNE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def spec_problems(tmp: Path, monkeypatch: pytest.MonkeyPatch, accelerator: str, train: dict[str, Any]) -> list[str]:
    from cloudtune.preflight import PreflightError, check_spec_inputs

    monkeypatch.chdir(tmp)
    if not (tmp / "models/m").exists():
        model_dir(tmp / "models/m")
    write(tmp / "data/train.jsonl", '{"text": "a b c"}\n')
    spec = spec_for(tmp, train)
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"accelerator": accelerator})})
    try:
        check_spec_inputs(spec)
    except PreflightError as exc:
        return exc.problems
    return []


# ------------------------------------------------------------------------------------ kind 1: precision
REFUSED = {
    ("TPU-v5e:4", "fp16"): "PyTorch/XLA on a TPU trains in bf16 only",  # case 21
    ("TPU-v5p:8", "fp16"): "PyTorch/XLA on a TPU trains in bf16 only",
    ("TPU-v6e:1", "fp16"): "PyTorch/XLA on a TPU trains in bf16 only",
    ("cpu", "fp16"): "fp16 mixed precision needs a CUDA GPU",
    ("T4:1", "bf16"): "bf16 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere), and T4 is 7.5",
    ("T4:4", "bf16"): "and T4 is 7.5",
}
ACCEPTED = [("T4:1", "fp16"), ("T4:1", "auto"), ("L4:1", "bf16"), ("A10G:1", "bf16"), ("A100:8", "bf16"),
            ("H100:8", "fp16"), ("cpu", "bf16"), ("cpu", "auto"), ("TPU-v5e:4", "bf16"), ("TPU-v6e:4", "auto"),
            ("TPU-v5e:4", "fp32")]


@pytest.mark.parametrize("accelerator, precision", sorted(REFUSED))
def test_precision_refused_by_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accelerator: str,
                                       precision: str) -> None:
    found = spec_problems(tmp_path, monkeypatch, accelerator, {"hyperparameters": {"precision": precision}})
    assert len(found) == 1, found
    assert found[0].startswith(f"train.hyperparameters.precision: {precision} on resources.accelerator {accelerator}")
    assert REFUSED[(accelerator, precision)] in found[0] and "To fix:" in found[0]


@pytest.mark.parametrize("accelerator, precision", ACCEPTED)
def test_precision_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accelerator: str, precision: str) -> None:
    assert spec_problems(tmp_path, monkeypatch, accelerator, {"hyperparameters": {"precision": precision}}) == []


def test_every_gpu_has_a_compute_capability_and_the_rule_matches_the_job() -> None:
    """One rule: what the plan refuses is what the job's second line (resolve_precision / xla_precision) refuses,
    given the device the catalog names; `auto` resolves the same."""
    from cloudtune.errors import JobInputError
    from cloudtune.train.arguments import resolve_precision
    from cloudtune.train.xla import xla_precision

    catalog = load_catalog()
    assert catalog.info("T4").compute_capability == (7, 5) and catalog.info("H100").compute_capability == (9, 0)
    for name in catalog.accelerators() + ["cpu"]:
        info = catalog.info(name)
        if info is not None and info.vendor == "nvidia":
            assert info.compute_capability is not None, name
            assert bf16_native(info) == bool(info.peak_bf16_tflops), name  # the catalog agrees with itself
        for precision in ("auto", "fp32", "bf16", "fp16"):
            refused = precision_problem(precision, info, name) is not None
            try:
                if info is not None and info.vendor == "google":
                    job = xla_precision(precision, "TPU")
                else:
                    job = resolve_precision(precision, info is not None, bf16_native(info))
            except JobInputError:
                job = None
            assert refused == (job is None), (name, precision)
            if job is not None:
                assert resolve(precision, info) == job, (name, precision)
    # the job's own GPU decides by its capability, never by torch's emulation-counting is_bf16_supported()
    assert resolve("auto", None, (7, 5)) == "fp16" and resolve("auto", None, (8, 0)) == "bf16"


def test_qlora_on_a_tpu_refused_by_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = spec_problems(tmp_path, monkeypatch, "TPU-v5e:4", {"lora": {"quantize": "4bit"}})
    assert found and found[0].startswith("train.lora.quantize: 4bit needs a CUDA GPU") and "TPU" in found[0]


def adapter_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"base_model_name_or_path": "gpt2", "peft_type": "LORA"}')
    (path / "adapter_model.safetensors").write_bytes((model_dir(path.parent / "w") / "model.safetensors").read_bytes())
    (path / "tokenizer.json").write_text((path.parent / "w" / "tokenizer.json").read_text())
    return path


@pytest.mark.parametrize("member, adapter, train, expected", [
    ("base_model beside a full model", False, {"base_model": "gpt2"}, "train.base_model is set, but train.model"),
    ("quantize on an adapter", True, {"lora": {"quantize": "4bit"}}, "train.lora.quantize: train.model"),
    ("lora + fsdp on an adapter", True, {"lora": {}, "distributed": "fsdp"}, "distributed: fsdp cannot gather"),
])
def test_adapter_rules_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str, adapter: bool,
                                    train: dict[str, Any], expected: str) -> None:
    if adapter:
        adapter_dir(tmp_path / "models/m")
    found = spec_problems(tmp_path, monkeypatch, "L4:1", train)
    assert len(found) == 1 and expected in found[0], found


def test_case_21_validate_and_the_gcp_dry_run_exit_2(tmp_path: Path) -> None:
    case = tmp_path / "case"
    if (CASES / "21-tpu-fp16").is_dir():
        shutil.copytree(CASES / "21-tpu-fp16", case)
    else:
        write(case / "data/train.jsonl", '{"text": "a"}\n')
        (case / "job.yaml").write_text("name: tpu-fp16\nresources: {accelerator: TPU-v5e:4}\ninputs:\n  train: "
                                       "./data/train.jsonl\ntrain:\n  model: ./models/tiny-gpt2\n  hyperparameters: "
                                       "{max_steps: 3, batch_size: 8, max_seq_len: 64, precision: fp16}\n")
    model_dir(case / "models/tiny-gpt2")
    gcp = ["--set", "providers.gcp.project=my-proj", "--set", "providers.gcp.region=us-central1",
           "--set", "providers.gcp.bucket=my-bucket"]
    for args in (["validate", "job.yaml"], ["launch", "job.yaml", "--provider", "gcp", "--dry-run", *gcp]):
        out = cli(*args, cwd=case, home=tmp_path / "home")
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert "train.hyperparameters.precision: fp16 on resources.accelerator TPU-v5e:4" in out.stderr
    fixed = cli("launch", "job.yaml", "--provider", "gcp", "--dry-run", *gcp, "--set",
                "train.hyperparameters.precision=bf16", cwd=case, home=tmp_path / "home")
    assert fixed.returncode == 0, fixed.stderr


# ------------------------------------------------------------------------------------ kind 1: model files
def _safetensors_without_tensors() -> bytes:
    header = b'{"__metadata__": {"format": "pt"}}'
    return len(header).to_bytes(8, "little") + header


MODEL_FILES = {
    "empty model.safetensors": ("model.safetensors", b"", "model.safetensors is empty (0 bytes)"),
    "safetensors without tensors": ("model.safetensors", _safetensors_without_tensors(), "holds no tensors"),
    "empty pytorch_model.bin": ("pytorch_model.bin", b"", "pytorch_model.bin is empty"),
    "html as pytorch_model.bin": ("pytorch_model.bin", b"<html>403 Forbidden</html>",
                                  "pytorch_model.bin is not a PyTorch checkpoint (torch.save) (it holds HTML"),
    "git-lfs pointer as pytorch_model.bin": ("pytorch_model.bin", b"version https://git-lfs.github.com/spec/v1\noid x\n",
                                             "Git LFS pointer: run git lfs pull"),
    "garbage tokenizer.json": ("tokenizer.json", b"<!DOCTYPE html><p>rate limited", "tokenizer.json is not valid JSON"),
    "tokenizer.json cut short": ("tokenizer.json", b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0',
                                 "tokenizer.json is not valid JSON"),
    "tokenizer.json without a model": ("tokenizer.json", b"{}", "tokenizer.json has no tokenizer model"),
    "empty tokenizer.json": ("tokenizer.json", b"", "tokenizer.json is empty"),
    "tokenizer.json a list": ("tokenizer.json", b"[1, 2]", "must hold a JSON object, got list"),
    "garbage vocab.json": ("vocab.json", b"\xff\xfe\x00garbage", "vocab.json is not UTF-8 text"),
    "empty merges.txt": ("merges.txt", b"", "merges.txt is empty"),
    "html merges.txt": ("merges.txt", b"<html>", "merges.txt holds HTML"),
    "empty vocab.txt": ("vocab.txt", b"", "vocab.txt is empty"),
    "empty tokenizer.model": ("tokenizer.model", b"", "tokenizer.model is empty"),
    "json as tokenizer.model": ("tokenizer.model", b'{"error": "not found"}', "tokenizer.model is not a SentencePiece"),
    "garbage tokenizer_config.json": ("tokenizer_config.json", b"{'single': 'quotes'}",
                                      "tokenizer_config.json is not valid JSON"),
}


@pytest.mark.parametrize("member", sorted(MODEL_FILES))
def test_broken_model_files_refused_by_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    name, content, expected = MODEL_FILES[member]
    files = {"vocab.json": ("vocab.json", "merges.txt"), "merges.txt": ("vocab.json", "merges.txt")}.get(name, ("tokenizer.json",))
    weights = ("pytorch_model.bin",) if name == "pytorch_model.bin" else ("model.safetensors",)
    model = model_dir(tmp_path / "models/m", files=files, weights=weights)
    (model / name).write_bytes(content)
    write(tmp_path / "data/train.jsonl", '{"text": "a"}\n')
    found = problems(tmp_path, {}, None, monkeypatch)
    assert any(expected in p for p in found), found
    assert all(p.startswith("train.model: models/m/") for p in found), found


def test_a_real_saved_model_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    make_tiny_gpt2(tmp_path / "models/m")
    write(tmp_path / "data/train.jsonl", '{"text": "a"}\n')
    assert problems(tmp_path, {}, None, monkeypatch) == []


# ------------------------------------------------------------------------------------ kind 1: no chat template
@pytest.mark.parametrize("shape", [
    {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
    {"prompt": [{"role": "user", "content": "u"}], "completion": [{"role": "assistant", "content": "a"}]},
])
def test_conversational_data_without_any_chat_template_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               shape: dict) -> None:
    write(tmp_path / "data/train.jsonl", json.dumps(shape) + "\n")
    found = problems(tmp_path, {}, None, monkeypatch)
    assert found and found[0].startswith("train.data.chat_template: the chat data format needs a chat template"), found
    model = tmp_path / "models/m"
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    assert problems(tmp_path, {}, None, monkeypatch) == []
    (model / "tokenizer_config.json").write_text("{}")
    (model / "chat_template.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    assert problems(tmp_path, {}, None, monkeypatch) == []  # a processor's template: transformers reads it


def test_the_template_sees_the_records_tools_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `tools` column reaches the template as `tools=` (as in the job), so its refusal shows at validate."""
    template = ("{% if tools %}{{ raise_exception('This model does not support tools') }}{% endif %}"
                "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
           "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    write(tmp_path / "data/train.jsonl", json.dumps({"messages": row["messages"]}) + "\n" + json.dumps(row) + "\n")
    found = problems(tmp_path, {"data": {"chat_template": template}}, None, monkeypatch)
    assert len(found) == 1 and found[0].startswith("data/train.jsonl, line 2: the chat template") and \
        "does not support tools" in found[0], found


@pytest.mark.parametrize("prompt, completion, kind", [
    ("Question?", [{"role": "assistant", "content": "a"}], "a string"),
    ([{"role": "user", "content": "u"}], "answer", "a list of messages"),
])
def test_mixed_prompt_completion_refused_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prompt: Any,
                                                      completion: Any, kind: str) -> None:
    write(tmp_path / "data/train.jsonl", json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    found = problems(tmp_path, {"data": {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}},
                     None, monkeypatch)
    assert found == [f"data/train.jsonl, line 1: field 'completion' must be {kind} like the prompt ('prompt'): TRL's "
                     f"prompt-completion is standard (two strings) or conversational (two message lists)"]
