"""The train section of the spec: new options, their defaults, and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.errors import SpecError
from cloudtune.spec import TrainSpec, load_spec

BASE = """\
name: t
inputs: {train: data/train.jsonl, eval: data/eval.jsonl}
train:
  task: {task}
  model: gpt2
  data: {data}
  hyperparameters: {hp}
{extra}"""


def load(tmp_path: Path, *, task: str = "causal-lm", data: str = "{train: train, eval: eval}", hp: str = "{}", extra: str = ""):
    p = tmp_path / "job.yaml"
    text = BASE
    for key, value in (("{task}", task), ("{data}", data), ("{hp}", hp), ("{extra}", extra)):
        text = text.replace(key, value)
    p.write_text(text)
    return load_spec(p)


def issue(tmp_path: Path, **kw) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, **kw)
    return "\n".join(f"{i.path}: {i.message} {i.hint}" for i in info.value.issues)


def test_defaults() -> None:
    t = TrainSpec(model="gpt2")
    d, hp = t.data, t.hyperparameters
    assert (d.format, d.text_field, d.prompt_field, d.completion_field, d.messages_field) == ("auto", "text", "prompt", "completion", "messages")
    assert (d.chat_template, d.label_field, d.labels, d.packing) == (None, "label", None, False)
    assert (hp.precision, hp.gradient_checkpointing, hp.eval_every, hp.early_stopping_patience) == ("auto", None, None, None)
    assert t.lora is None


def test_lora_is_accepted_now(tmp_path: Path) -> None:
    spec = load(tmp_path, extra="  lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj], merge: true}\n")
    assert spec.train.lora.r == 8 and spec.train.lora.merge and spec.train.lora.target_modules == ["q_proj", "v_proj"]
    assert load(tmp_path, extra="  lora: {}\n").train.lora.target_modules == "auto"


@pytest.mark.parametrize("kw,expected", [
    (dict(task="seq-classification", data="{train: train, packing: true}"),
     "packing applies to task causal-lm only .* remove `packing: true` or set task: causal-lm"),
    (dict(task="seq-classification", data="{train: train, format: chat}"), "format 'chat' applies to task causal-lm only"),
    (dict(data="{train: train, labels: [a, b]}"), "labels applies to task seq-classification only"),
    (dict(data="{train: train, format: text, chat_template: x}"), "chat_template is used by the chat format only"),
    (dict(data="{train: train, eval: null}", hp="{eval_every: 10}"), "eval_every needs an eval set"),
    (dict(hp="{early_stopping_patience: 3}"), "set hyperparameters.eval_every"),
    (dict(data="{train: train, eval: null}", hp="{early_stopping_patience: 3, eval_every: 5}"), "needs an eval set"),
    (dict(data="{train: train, format: markdown}"), "train.data.format: .*'auto', 'text', 'instruction' or 'chat'"),
    (dict(hp="{precision: fp8}"), "train.hyperparameters.precision: .*'auto', 'fp32', 'bf16' or 'fp16'"),
    (dict(data="{train: train, pack: true}"), "train.data.pack: unknown key 'pack' did you mean 'packing'"),
    (dict(hp="{gradient_checkpoint: true}"), "did you mean 'gradient_checkpointing'"),
    (dict(extra="  lora: {rank: 8}\n"), "train.lora.rank: unknown key 'rank'"),
    (dict(extra="  lora: {target_modules: []}\n"), "target_modules is empty"),
    (dict(extra="  lora: {r: 0}\n"), "train.lora.r: .*greater than or equal to 1"),
    (dict(task="seq-classification", data="{train: train, labels: [a, a]}"), "lists 'a' more than once"),
    (dict(task="seq-classification", data="{train: train, labels: [a]}"), "at least two label names"),
    (dict(task="regression"), "'causal-lm', 'seq-classification', 'text-to-image', 'preference' or 'text-to-audio'"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_errors(tmp_path: Path, kw: dict, expected: str) -> None:
    import re

    text = issue(tmp_path, **kw)
    assert re.search(expected, text), text


def test_new_options_at_their_default_are_left_out_of_the_runtime_dump() -> None:
    """Job configs of specs that do not use the new options stay byte-identical (golden plans, SageMaker's 2500-char cap)."""
    plain = TrainSpec(model="gpt2")
    dumped = plain.model_dump(mode="json")
    assert set(dumped["data"]) == {"train", "eval", "text_field"}
    assert "precision" not in dumped["hyperparameters"] and "eval_every" not in dumped["hyperparameters"]
    rich = TrainSpec.model_validate({"model": "gpt2", "task": "seq-classification", "data": {"labels": ["a", "b"]},
                                     "lora": {"merge": True}, "hyperparameters": {"precision": "bf16", "eval_every": 5}})
    again = TrainSpec.model_validate(rich.model_dump(mode="json"))
    assert again == rich and again.lora.merge and again.data.labels == ["a", "b"]
    assert TrainSpec.model_validate(dumped) == plain


ROUND_TRIP_SPECS = {  # each task with every section it takes, options left at their defaults
    "causal-lm": {"model": "m", "data": {"format": "chat"}},
    "seq-classification": {"task": "seq-classification", "model": "m", "data": {"labels": ["no", "yes"]}},
    "preference": {"task": "preference", "model": "m", "preference": {"method": "kto"}},
    "text-to-image": {"task": "text-to-image", "model": "m", "lora": {"r": 4}, "validation": {"prompts": ["a"]},
                      "data": {"random_flip": True}},
    "text-to-audio": {"task": "text-to-audio", "model": "m", "validation": {"prompts": ["a"], "seconds": 2},
                      "audio": {"max_seconds": 10}},
}


@pytest.mark.parametrize("task", sorted(ROUND_TRIP_SPECS))
def test_the_container_reads_back_the_train_section_the_plan_wrote(task: str) -> None:
    """The plan writes `train` into the job JSON (cloudtune.contracts.jobfile) and the container validates it again
    (cloudtune.entrypoint): every task's spec passes both, with the same values and the same options given (a rule
    that refuses an option for a task, or a default that means "the model's own", reads which were given)."""
    import json
    from typing import get_args

    from cloudtune.spec import TrainSpec

    assert set(ROUND_TRIP_SPECS) == set(get_args(TrainSpec.model_fields["task"].annotation))
    planned = TrainSpec.model_validate(ROUND_TRIP_SPECS[task])
    back = TrainSpec.model_validate(json.loads(json.dumps(planned.model_dump(mode="json"))))
    assert back == planned
    for part in ("validation", "audio", "preference", "data", "hyperparameters", "lora"):
        mine, theirs = getattr(planned, part, None), getattr(back, part, None)
        meaningful = set(getattr(type(mine), "_OMIT_WHEN_UNSET", ()))
        if mine is not None:
            assert theirs.model_fields_set & meaningful == mine.model_fields_set & meaningful, part
