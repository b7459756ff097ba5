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


SIMPLE_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                   "{% if add_generation_prompt %}<assistant>{% endif %}")


def turn(role: str, text: str) -> dict[str, str]:
    return {"role": role, "content": text}


PREFERENCE_DATA = {  # TRL's shapes (cloudtune.data.preference), each as a user writes it
    "explicit-text": ("dpo", {"prompt": "2 + 2 = ", "chosen": "4", "rejected": "5"}),
    "implicit-text": ("orpo", {"chosen": "2 + 2 = 4", "rejected": "2 + 2 = 5"}),
    "unpaired-text": ("kto", {"prompt": "2 + 2 = ", "completion": "4", "label": True}),
    "explicit-messages": ("dpo", {"prompt": [turn("user", "2 + 2?")], "chosen": [turn("assistant", "4")],
                                  "rejected": [turn("assistant", "5")]}),
    "implicit-messages": ("simpo", {"chosen": [turn("user", "2 + 2?"), turn("assistant", "4")],
                                    "rejected": [turn("user", "2 + 2?"), turn("assistant", "5")]}),
    "unpaired-messages": ("kto", {"prompt": [turn("user", "2 + 2?")], "completion": [turn("assistant", "4")],
                                  "label": False}),
}


def preference_project(tmp: Path, model: Path, method: str, records: list[dict[str, Any]],
                       template: str | None = SIMPLE_TEMPLATE) -> Path:
    spec = project(tmp, model, {"task": "preference", "preference": {"method": method}, "lora": {"r": 4}}, records)
    if template is not None:  # the model's own chat template, as transformers saves it
        (tmp / "models/tiny/chat_template.jinja").write_text(template)
    return spec


@pytest.mark.parametrize("case", sorted(PREFERENCE_DATA))
def test_deep_check_reads_each_preference_shape_as_trl_does(case: str, tiny_gpt2: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Preference data is checked by its own rules (not as causal-LM text): every shape of TRL's passes, and its
    conversations are rendered by the model's chat template, as TRL renders them."""
    method, record = PREFERENCE_DATA[case]
    result = deep(preference_project(tmp_path, tiny_gpt2, method, [record] * 3), monkeypatch)
    assert result.exit_code == 0, result.output
    shape, style = case.split("-")
    assert f"train: preference data ({shape}, {'messages' if style == 'messages' else 'text'}): 3 record(s) checked" \
        in result.output


@pytest.mark.parametrize("records, template, expected", [
    ([PREFERENCE_DATA["explicit-messages"][1]], None,
     "data/train.jsonl, line 1: the records are conversations ({role, content} message lists), which TRL renders with "
     "the model's own chat template, and this model's tokenizer has none. To fix:"),
    ([PREFERENCE_DATA["explicit-messages"][1],
      {"prompt": [turn("system", "be brief"), turn("user", "2 + 2?")], "chosen": [turn("assistant", "4")],
       "rejected": [turn("assistant", "5")]}], GEMMA_STYLE,
     "data/train.jsonl, line 2: the model's chat template refused this conversation: System role not supported. "
     "To fix:"),
    ([PREFERENCE_DATA["explicit-text"][1], {"prompt": "2 + 2 = ", "chosen": "4"}], SIMPLE_TEMPLATE,
     "data/train.jsonl, line 2: field 'rejected' is missing"),
    ([PREFERENCE_DATA["explicit-messages"][1],
      {"prompt": [turn("user", "2 + 2?")], "chosen": [turn("user", "2 + 2?"), turn("assistant", "4")],
       "rejected": [turn("assistant", "5")]}], SIMPLE_TEMPLATE,
     "data/train.jsonl, line 2: field 'chosen', message 0 has role 'user'; chosen is the answer being judged"),
])
def test_deep_preference_problems_are_one_line(records: list[dict[str, Any]], template: str | None, expected: str,
                                               tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = deep(preference_project(tmp_path, tiny_gpt2, "dpo", records, template), monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.output


def test_every_task_has_its_own_deep_data_check() -> None:
    """Each task's data is read by its own rules: a task is in DATA_CHECKS, or deep_check hands it to its own
    module (text-to-image, text-to-audio) before any text-model check."""
    import inspect
    from typing import get_args

    from cloudtune.preflight import deep as deep_module
    from cloudtune.spec import TrainSpec

    own_branch = {task for task in get_args(TrainSpec.model_fields["task"].annotation)
                  if f'train.task == "{task}"' in inspect.getsource(deep_module.deep_check)}
    assert own_branch == {"text-to-image", "text-to-audio"}
    assert set(get_args(TrainSpec.model_fields["task"].annotation)) == set(deep_module.DATA_CHECKS) | own_branch


def test_local_launch_of_a_preference_job_trains(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cloudtune launch` of a local DPO job: the deep check passes and the job succeeds (the CLI's path, with the
    deep check, not only the API's)."""
    spec = preference_project(tmp_path, tiny_gpt2, "dpo", [PREFERENCE_DATA["explicit-text"][1]] * 8)
    data = json.loads(spec.read_text())
    data["train"]["hyperparameters"].update({"max_steps": 2, "batch_size": 2})
    spec.write_text(json.dumps(data))
    result = deep(spec, monkeypatch, "launch")
    assert result.exit_code == 0, result.output
    [job] = JobStore(tmp_path / "home").list()
    assert job.state == "succeeded" and (Path(job.model_uri) / "adapter_config.json").is_file(), result.output
