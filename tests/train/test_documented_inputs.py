"""Issue 12 (round 2) kind 2: documented inputs are read, never refused or silently cut.

* `Dataset.save_to_disk` / `DatasetDict.save_to_disk` directories (case 22): the preflight samples their Arrow
  shards (state.json's order; a DatasetDict's `train` split) as the runtime's `load_from_disk` reads them, never
  parsing dataset_info.json as data; metadata beside plain data files is skipped the same way.
* Qwen3 / DeepSeek-R1 chat data (case 23): `reasoning_content` reaches the chat template and lands inside the
  assistant turn's loss; a message field the template never reads is refused by name, at validate and in the job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("transformers")

from cloudtune.errors import JobInputError  # noqa: E402
from cloudtune.spec import DataSpec  # noqa: E402
from cloudtune.data.encode import encode_records  # noqa: E402
from cloudtune.train.data import encode_input  # noqa: E402
from cloudtune.train.packing import IGNORE  # noqa: E402
from cloudtune.data.records import data_files  # noqa: E402
from tests.test_preflight import problems, write  # noqa: E402
from tests.tiny_models import make_tiny_gpt2, make_tiny_llama  # noqa: E402

CASES = Path("/work/shared/cases")
TEXTS = [f"the boat number {i % 4} sails north at dawn" for i in range(12)]


def cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CLOUDTUNE_HOME": str(home)})


# ------------------------------------------------------------------------------------ save_to_disk
def test_case_22_save_to_disk_inputs_validate_and_train(tmp_path: Path) -> None:
    case = tmp_path / "case"
    if (CASES / "22-save-to-disk-input").is_dir():
        shutil.copytree(CASES / "22-save-to-disk-input", case)
    else:
        datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(case / "data/train_ds"))
        datasets.Dataset.from_dict({"text": TEXTS[:4]}).save_to_disk(str(case / "data/eval_ds"))
        (case / "job.yaml").write_text(
            "name: azure-ro-input\nresources: {accelerator: cpu}\ninputs:\n  train: data/train_ds\n  eval: data/eval_ds\n"
            "  model: ./models/tiny-gpt2\ntrain:\n  model: model\n  hyperparameters: {max_steps: 2, batch_size: 4, "
            "max_seq_len: 64}\n  health: {collapse: false}\nproviders:\n  local: {emulate: azure}\n")
    make_tiny_gpt2(case / "models/tiny-gpt2")
    out = cli("validate", "job.yaml", cwd=case, home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    out = cli("launch", "job.yaml", cwd=case, home=tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "global_step=2" in out.stdout + out.stderr


@pytest.mark.parametrize("member", ["Dataset", "DatasetDict", "DatasetDict train split only", "nested shards"])
def test_saved_dataset_layouts_are_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    target = tmp_path / "data/saved"
    if member == "Dataset":
        ds.save_to_disk(str(target))
    elif member == "nested shards":
        ds.save_to_disk(str(target), num_shards=3)
    else:
        splits = {"train": ds} if member.endswith("only") else {"train": ds, "test": ds.select(range(3))}
        datasets.DatasetDict(splits).save_to_disk(str(target))
    files = data_files(target, "data/saved")
    assert files and all(f.suffix == ".arrow" for f in files)
    assert all("/test/" not in str(f) for f in files)  # the split the recipe trains on
    assert problems(tmp_path, {}, {"train": "data/saved"}, monkeypatch) == []


def test_saved_dataset_problems_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(
        str(tmp_path / "data/nodict"))
    found = problems(tmp_path, {}, {"train": "data/nodict"}, monkeypatch)
    assert found == ["data/nodict: a saved DatasetDict without a 'train' split (splits: validation); save the split "
                     "to train on"]
    ds_dir = tmp_path / "data/cut"
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(ds_dir), num_shards=2)
    next(ds_dir.glob("*.arrow")).unlink()
    found = problems(tmp_path, {}, {"train": "data/cut"}, monkeypatch)
    assert len(found) == 1 and "state.json names missing shards: data-00000-of-00002.arrow" in found[0], found
    datasets.Dataset.from_dict({"body": TEXTS}).save_to_disk(str(tmp_path / "data/field"))
    found = problems(tmp_path, {}, {"train": "data/field"}, monkeypatch)
    assert len(found) == 1 and found[0].startswith("data/field/data-00000-of-00001.arrow, row 1: cannot tell the data "
                                                   "format (fields present: body)"), found


def test_datasets_metadata_beside_data_files_is_not_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub-style export: Parquet shards with dataset_infos.json (and a stray state.json) beside them."""
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    ds.to_parquet(str(tmp_path / "data/export/train-00000-of-00001.parquet"))
    write(tmp_path / "data/export/dataset_infos.json", '{"default": {"features": {}}}')
    write(tmp_path / "data/export/sub/state.json", '{"_data_files": []}')
    assert problems(tmp_path, {}, {"train": "data/export"}, monkeypatch) == []


def test_the_runtime_loads_a_saved_dataset_dict(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = make_tiny_gpt2(tmp_path / "m")
    target = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS}),
                          "test": datasets.Dataset.from_dict({"text": TEXTS[:2]})}).save_to_disk(str(target))
    encoded = encode_input(target, "data/dd", DataSpec(), AutoTokenizer.from_pretrained(str(model)), 32)
    assert encoded.examples == len(TEXTS)


# ------------------------------------------------------------------------------------ reasoning_content
def case_23_spec() -> dict[str, Any]:
    import yaml

    if (CASES / "23-reasoning-content/job.yaml").is_file():
        return yaml.safe_load((CASES / "23-reasoning-content/job.yaml").read_text())
    pytest.skip("case 23 is not on this machine")


def reasoning_lines(**extra: Any) -> str:
    return "".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "reasoning_content": f"think about {i} first", "content": f"answer {i}", **extra}]}) + "\n"
        for i in range(4))


PLAIN = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template, extra, expected", [
    ("case", {}, None),  # case 23's Qwen3-style template reads reasoning_content
    (PLAIN, {}, "data/train.jsonl, line 1: messages[1] has field 'reasoning_content', which the chat template "
                "(train.data.chat_template) never reads"),
    ("case", {"weight": 0.5}, "messages[1] has field 'weight'"),
    ("case", {"tool_calls": None}, None),  # a null field is absent
    (PLAIN + "{# m.reasoning_content #}{# thinking #}", {"thinking": "x"}, None),  # a template that names it
])
def test_message_fields_reach_the_template_or_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 template: str, extra: dict, expected: str | None) -> None:
    template = case_23_spec()["train"]["data"]["chat_template"] if template == "case" else template
    write(tmp_path / "data/train.jsonl", reasoning_lines(**extra))
    found = problems(tmp_path, {"data": {"chat_template": template}}, None, monkeypatch)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0] and "To fix:" in found[0], found


def test_conversational_prompt_completion_checked_at_plain_validate(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL's conversational prompt-completion: the template's refusal and unread fields, without --deep."""
    rows = [{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
             "completion": [{"role": "assistant", "content": "hello"}]}]
    write(tmp_path / "data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    found = problems(tmp_path, {"data": {"chat_template": NO_SYSTEM_TEMPLATE}}, None, monkeypatch)
    assert len(found) == 1 and "refused this conversation: System role not supported" in found[0], found
    rows[0]["prompt"] = rows[0]["prompt"][1:]
    rows[0]["completion"][0]["reasoning_content"] = "greet back"
    write(tmp_path / "data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    found = problems(tmp_path, {"data": {"chat_template": NO_SYSTEM_TEMPLATE}}, None, monkeypatch)
    assert len(found) == 1 and "completion[0] has field 'reasoning_content'" in found[0], found


NO_SYSTEM_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                      "supported') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Case 23's model: a tiny Llama whose tokenizer knows the template's special tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_llama(tmp_path_factory.mktemp("qwen") / "tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]})
    model = AutoModelForCausalLM.from_pretrained(str(path))
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def test_case_23_reasoning_is_trained_inside_the_assistant_turn(qwen_tokenizer: Any) -> None:
    spec = case_23_spec()
    data = DataSpec.model_validate({"chat_template": spec["train"]["data"]["chat_template"]})
    records = [(f"data/train.jsonl, line {i + 1}", json.loads(line))
               for i, line in enumerate((CASES / "23-reasoning-content/data/train.jsonl").read_text().splitlines())]
    examples, fmt, _ = encode_records(records[:2], data, qwen_tokenizer, 96)
    assert fmt == "chat"
    trained = qwen_tokenizer.decode([t for t, lab in zip(examples[0]["input_ids"], examples[0]["labels"]) if lab != IGNORE])
    assert trained == ("<think>\nwater to bean by weight, a common ratio is 1:16\n</think>\n\none to sixteen<|im_end|>\n")


def test_the_job_refuses_an_unread_field_by_name(qwen_tokenizer: Any) -> None:
    """The in-job second line: a template that never reads reasoning_content."""
    records = [(f"data/train.jsonl, line {i + 1}", json.loads(line)) for i, line in enumerate(reasoning_lines().splitlines())]
    with pytest.raises(JobInputError, match=r"data/train.jsonl, line 1: messages\[1\] has field 'reasoning_content'"):
        encode_records(records, DataSpec.model_validate({"chat_template": PLAIN}), qwen_tokenizer, 96)
