"""Plan side of preference tuning and the training knobs (no torch): the spec's refusals, the preflight's data checks
(file, line, field, fix), the accelerator refusals of the knobs, push_to_hub's token rules, the trust_remote_code
note, the disk check with the smallest disk_gb that fits, the memory estimate's reference copy and ZeRO division,
and the generated DeepSpeed config against transformers' own DeepSpeed integration."""

from __future__ import annotations

import importlib.util

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudtune.contracts.deepspeed import deepspeed_config
from cloudtune.errors import JobInputError, SpecError
from cloudtune.memory import estimate, facts_from_config, setup_for, KNOWN_MODELS
from cloudtune.preflight import PreflightError, check_spec_inputs
from cloudtune.spec import TrainSpec, validate_spec

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-AbCdEf"
PAIRS = [{"prompt": "p", "chosen": " a", "rejected": " b"}] * 3


def job(tmp: Path, train: dict[str, Any], *, records: list[Any] = PAIRS, accelerator: str = "cpu", **top: Any) -> Any:
    (tmp / "data").mkdir(exist_ok=True)
    (tmp / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = {"name": "pref", "inputs": {"train": "data/train.jsonl"}, "resources": {"accelerator": accelerator},
            "train": {"model": "gpt2", "task": "preference", **train}, **top}
    return validate_spec(data, base_dir=tmp)


def problems(spec: Any) -> list[str]:
    try:
        check_spec_inputs(spec)
    except PreflightError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("train, message", [
    ({"task": "causal-lm", "preference": {"method": "dpo"}}, "train.preference applies to task preference only"),
    ({"preference": {"method": "orpo", "reference": "copy"}}, "orpo has no reference model"),
    ({"data": {"packing": True}}, "packing applies to task causal-lm"),
    ({"preference": {"method": "ipo"}}, "dpo"),
    ({"hyperparameters": {"warmup_steps": 10, "warmup_ratio": 0.1}}, "one of hyperparameters.warmup_steps and warmup_ratio"),
    ({"hyperparameters": {"optimizer": "sgd8"}}, "adamw_torch"),
    ({"distributed": "deepspeed-zero3", "lora": {"quantize": "4bit"}}, "DeepSpeed"),
    ({"preference": {"method": "kto"}, "hyperparameters": {"batch_size": 1}}, "KTO needs at least 2 examples per device"),
])
def test_spec_refusals(tmp_path: Path, train: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        job(tmp_path, train)
    assert message in str(err.value)


def turns(*pairs: str) -> list[dict[str, str]]:
    """Messages from 'role: content' strings."""
    return [{"role": p.split(": ")[0], "content": p.split(": ", 1)[1]} for p in pairs]


ANSWER_ROLES = [  # (records, the problem, what it shows): a judged answer holds 'assistant' messages only
    ([{"prompt": turns("user: q"), "chosen": turns("user: q", "assistant: a"), "rejected": turns("assistant: b")}],
     r"data/train.jsonl, line 1: field 'chosen', message 0 has role 'user'; chosen is the answer being judged, which "
     r"the model is trained to write whole, so it holds 'assistant' messages only. To fix: move the 'user' message "
     r"into field 'prompt'$", "explicit: the conversation repeated in chosen"),
    ([{"prompt": turns("user: q"), "chosen": turns("assistant: a"), "rejected": turns("bot: b")}],
     r"line 1: field 'rejected', message 0 has role 'bot'; .* To fix: write role 'assistant' \('bot' is not a role",
     "explicit: an unknown role"),
    ([{"prompt": turns("user: q"), "chosen": turns("assistant: a", "tool: 42"), "rejected": turns("assistant: b")}],
     r"line 1: field 'chosen', message 1 has role 'tool'; .* move the 'tool' message into field 'prompt'",
     "explicit: a tool result after the answer"),
    ([{"chosen": turns("user: q1", "assistant: a"), "rejected": turns("user: q2", "assistant: b")}],
     r"line 1: field 'chosen', message 0 has role 'user'; .* To fix: move the 'user' message into the start both "
     r"conversations share \(TRL's prompt is the messages chosen and rejected have in common from the first on, "
     r"here 0; the rest of each is its answer\)", "implicit: the pair differs in its user turn"),
    ([{"chosen": turns("user: q", "assistant: a1", "user: more", "assistant: a2"),
       "rejected": turns("user: q", "assistant: b1", "user: more", "assistant: b2")}],
     r"line 1: field 'chosen', message 2 has role 'user'; .* here 1;", "implicit: a multi-turn pair differing early"),
]
KTO_ANSWER_ROLES = [
    ([{"prompt": turns("user: q"), "completion": turns("user: q", "assistant: a"), "label": True}] * 2,
     r"line 1: field 'completion', message 0 has role 'user'; .* move the 'user' message into field 'prompt'",
     "kto: the conversation repeated in completion"),
]


@pytest.mark.parametrize("records, where", [
    ([{"prompt": "p", "chosen": "a"}], r"train.jsonl, line 1: field 'rejected' is missing"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                                        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}],
     r"train.jsonl, line 2: a messages record of shape implicit, where .*line 1 is a text record of shape explicit"),
    ([{"prompt": "p", "completion": "a", "label": True}], r"line 1: an unpaired record .* read by train.preference.method kto only"),
    ([{"prompt": "p", "chosen": "", "rejected": "b"}], r"line 1: field 'chosen' is empty"),
    ([{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
       "rejected": [{"role": "user", "content": "q"}]}], r"field 'rejected' ends with a 'user' message"),
    *[(records, where) for records, where, _ in ANSWER_ROLES],
])
def test_preflight_names_the_file_line_and_field(tmp_path: Path, records: list[Any], where: str) -> None:
    found = problems(job(tmp_path, {}, records=records))
    assert len(found) == 1 and re.search(where, found[0]) and "To fix" in found[0]


@pytest.mark.parametrize("records, where, case", KTO_ANSWER_ROLES, ids=[c for *_, c in KTO_ANSWER_ROLES])
def test_a_kto_completion_holds_the_assistants_answer_only(tmp_path: Path, records: list[Any], where: str,
                                                          case: str) -> None:
    found = problems(job(tmp_path, {"preference": {"method": "kto"}}, records=records))
    assert len(found) == 1 and re.search(where, found[0]), found


def test_conversations_whose_answers_are_the_assistants_pass(tmp_path: Path) -> None:
    """What TRL's conversational shapes allow: an answer of several assistant messages, a prompt ending with the
    assistant (continued), a multi-turn implicit pair differing in its last answer only."""
    explicit = {"prompt": turns("system: be brief", "user: q", "assistant: partial"),
                "chosen": turns("assistant: a", "assistant: more"), "rejected": turns("assistant: b")}
    implicit = {"chosen": turns("user: q", "assistant: a", "user: more", "assistant: a2"),
                "rejected": turns("user: q", "assistant: a", "user: more", "assistant: b2")}
    kto = {"prompt": turns("user: q"), "completion": turns("assistant: a"), "label": True}
    for records, method in (([explicit] * 2, "dpo"), ([implicit] * 2, "orpo"),
                            ([kto, {**kto, "label": False}], "kto")):
        assert problems(job(tmp_path, {"preference": {"method": method}}, records=records)) == []


@pytest.mark.parametrize("label, counts, fix", [
    (True, "(3 desirable, 0 undesirable)", "add undesirable (label: false) examples, or train on these completions "
                                          "alone with task: causal-lm (SFT)"),
    (False, "(0 desirable, 3 undesirable)", "add desirable (label: true) examples, or pair each with a better answer"),
])
def test_kto_data_with_one_label_only_is_warned_about(tmp_path: Path, label: bool, counts: str, fix: str) -> None:
    """TRL's KTOTrainer trains on one side only without a word (its desirable_weight hint counts the missing side
    as 1): the plan says so, with the counts and the fix; a CSV's text labels count the same."""
    records = [{"prompt": "q", "completion": f" a{i}", "label": label if i else str(label).lower()} for i in range(3)]
    notes = check_spec_inputs(job(tmp_path, {"preference": {"method": "kto"}}, records=records))
    [warning] = [n for n in notes if "KTO records" in n]
    assert f"data/train.jsonl, line 1: all 3 KTO records have label {str(label).lower()} {counts}: KTO learns from " \
           f"the contrast between the two" in warning and f"To fix: {fix}" in warning, warning


def test_kto_data_with_both_labels_or_pairs_or_a_partial_sample_is_not_warned_about(tmp_path: Path) -> None:
    from cloudtune.preflight.preference import check_preference_samples

    kto = [{"prompt": "q", "completion": " a", "label": True}, {"prompt": "q", "completion": " b", "label": False}]
    for records in (kto, PAIRS):
        notes = check_spec_inputs(job(tmp_path, {"preference": {"method": "kto"}}, records=records))
        assert not [n for n in notes if "KTO records" in n], notes
    one_side = [(f"line {i}", kto[0]) for i in range(3)]
    train = job(tmp_path, {"preference": {"method": "kto"}}).train
    assert check_preference_samples({"train": (one_side, False)}, train) == []  # more records may follow
    assert check_preference_samples({"eval": (one_side, True)}, train) == []  # an eval set is not trained on
    assert len(check_preference_samples({"train": (one_side, True)}, train)) == 1


def test_pairs_that_never_differ_are_refused_and_some_identical_ones_are_said(tmp_path: Path) -> None:
    """A pair with chosen == rejected has a zero margin whatever the model does: data made only of them is refused
    before the job (it would "succeed" having learnt nothing); a few ties among real pairs pass (the job counts them)."""
    from cloudtune.data.preference import identical_pairs

    same = [{"prompt": "p", "chosen": " a", "rejected": " a"}] * 3
    [found] = problems(job(tmp_path, {}, records=same))
    assert found.endswith(
        "data/train.jsonl, line 1: every pair has the same chosen and rejected answer, so preference tuning has nothing "
        "to learn (every margin is 0). To fix: give the better answer in chosen and the worse in rejected"), found
    mixed = PAIRS + same[:1]
    assert problems(job(tmp_path, {}, records=mixed)) == []
    assert identical_pairs([(f"line {i + 1}", r) for i, r in enumerate(mixed)]) == ["line 4"]


def test_every_data_shape_passes(tmp_path: Path) -> None:
    chat = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    implicit = {"chosen": "q a", "rejected": "q b"}
    kto = {"prompt": "q", "completion": "a", "label": False}
    for records, method in ((PAIRS, "dpo"), ([chat] * 2, "dpo"), ([implicit] * 2, "simpo"), ([kto] * 2, "kto"),
                            (PAIRS, "kto")):
        assert problems(job(tmp_path, {"preference": {"method": method}}, records=records)) == []


@pytest.mark.parametrize("accelerator, train, message", [
    ("cpu", {"hyperparameters": {"optimizer": "paged_adamw_8bit"}}, "paged AdamW pages optimizer state through CUDA"),
    ("TPU-v5e:4", {"hyperparameters": {"optimizer": "adamw_bnb_8bit"}}, "8-bit AdamW runs CUDA kernels only"),
    ("cpu", {"attn_implementation": "flash_attention_2"}, "FlashAttention-2 runs on CUDA GPUs only"),
    ("T4:1", {"attn_implementation": "flash_attention_2"}, "compute capability 7.5, and FlashAttention-2 needs 8.0+"),
    ("TPU-v5e:4", {"attn_implementation": "flash_attention_2"}, "a TPU runs PyTorch/XLA's attention"),
    ("TPU-v5e:4", {"distributed": "deepspeed-zero2"}, "DeepSpeed does not run under PyTorch/XLA"),
])
def test_knobs_the_accelerator_cannot_run_are_refused(tmp_path: Path, accelerator: str, train: dict, message: str) -> None:
    found = problems(job(tmp_path, train, accelerator=accelerator))
    assert len(found) == 1 and message in found[0] and "To fix" in found[0]


@pytest.mark.parametrize("accelerator, train", [
    ("L4:1", {"hyperparameters": {"optimizer": "paged_adamw_8bit"}, "attn_implementation": "flash_attention_2",
              "distributed": "deepspeed-zero3"}),
    ("cpu", {"hyperparameters": {"optimizer": "adafactor", "lr_scheduler": "cosine", "warmup_steps": 5,
                                 "max_grad_norm": 0.3}, "attn_implementation": "sdpa"}),
    ("cpu", {"distributed": "deepspeed-zero2"}),  # DeepSpeed's CPU accelerator
])
def test_knobs_the_accelerator_runs_pass(tmp_path: Path, accelerator: str, train: dict) -> None:
    assert problems(job(tmp_path, train, accelerator=accelerator)) == []


def test_push_to_hub_needs_its_token_as_a_secret(tmp_path: Path) -> None:
    push = {"push_to_hub": {"repo": "acme/tiny"}}
    assert "is not under `secrets:`" in problems(job(tmp_path, push))[0]
    plain = problems(job(tmp_path, push, env={"HF_TOKEN": "hf_x"}))
    assert "env.HF_TOKEN: the Hub token of train.push_to_hub is in plain env" in plain[0]
    spec = job(tmp_path, push | {"trust_remote_code": True}, secrets={"HF_TOKEN": ARN})
    notes = check_spec_inputs(spec)
    assert any("created private" in n and "acme/tiny" in n for n in notes)
    assert any("train.trust_remote_code: the Python code shipped with gpt2 runs inside the job" in n for n in notes)
    from cloudtune import api

    planned = api.plan(spec, "local", suffix="abcd")  # the dry run's notes: what validate says, the plan says
    assert [n for n in notes if n.startswith("train.")] == [n for n in planned.notes if n.startswith("train.")]


def test_disk_check_gives_the_smallest_disk_that_fits(tmp_path: Path) -> None:
    full = job(tmp_path, {"task": "causal-lm", "model": "meta-llama/Llama-3.1-8B"},
               records=[{"text": "x"}], accelerator="H100:8")
    found = problems(full)
    assert len(found) == 1 and found[0].startswith("resources.disk_gb 100: the job needs about")
    fits = int(re.search(r"set resources.disk_gb: (\d+)", found[0]).group(1))
    assert fits > 200  # two checkpoints of fp32 weights + Adam state of 8B parameters alone are ~190 GB
    [short] = problems(job(tmp_path, {"task": "causal-lm", "model": "meta-llama/Llama-3.1-8B"}, records=[{"text": "x"}],
                           accelerator="H100:8", resources={"accelerator": "H100:8", "disk_gb": fits - 1}))
    shown = re.search(r"disk_gb (\S+): the job needs about (\S+) GB", short)
    assert float(shown.group(2)) > float(shown.group(1)) == fits - 1  # one under the fit never reads as enough
    assert problems(job(tmp_path, {"task": "causal-lm", "model": "meta-llama/Llama-3.1-8B"}, records=[{"text": "x"}],
                        accelerator="H100:8", resources={"accelerator": "H100:8", "disk_gb": fits})) == []
    assert problems(job(tmp_path, {"task": "causal-lm", "model": "meta-llama/Llama-3.1-8B", "lora": {}},
                        records=[{"text": "x"}], accelerator="H100:8")) == []


def _train(**kw: Any) -> TrainSpec:
    return TrainSpec.model_validate({"model": "m", "task": "preference", **kw})


def test_memory_counts_the_reference_copy_and_divides_as_zero_does() -> None:
    facts = facts_from_config(KNOWN_MODELS["meta-llama/Llama-3.1-8B"], "table")
    copy = estimate(facts, setup_for(_train(), "bf16", 1))
    lora = estimate(facts, setup_for(_train(lora={}), "bf16", 1))
    pre = estimate(facts, setup_for(_train(preference={"reference": "precomputed"}), "bf16", 1))
    orpo = estimate(facts, setup_for(_train(preference={"method": "orpo"}), "bf16", 1))
    assert copy.weights == pre.weights + 4 * facts.params == orpo.weights + 4 * facts.params
    assert lora.weights < 3 * facts.params  # the bf16 base once, the adapter: no second copy
    one = estimate(facts, setup_for(_train(preference={"method": "orpo"}), "bf16", 1))
    z2 = estimate(facts, setup_for(_train(preference={"method": "orpo"}, distributed="deepspeed-zero2"), "bf16", 8))
    z3 = estimate(facts, setup_for(_train(preference={"method": "orpo"}, distributed="deepspeed-zero3"), "bf16", 8))
    assert (z2.weights, z2.gradients, z2.optimizer) == (one.weights, one.gradients // 8, one.optimizer // 8)
    assert (z3.weights, z3.optimizer) == (one.weights // 8, one.optimizer // 8)


def test_deepspeed_config_leaves_to_transformers_only_what_it_fills() -> None:
    """Every "auto" value must be one transformers' DeepSpeed integration fills from the TrainingArguments (its
    `trainer_config_process` / `trainer_config_finalize` `fill_match` / `fill_only` keys), else DeepSpeed gets the
    string "auto"."""
    from transformers.integrations import deepspeed as hf_ds

    source = inspect.getsource(hf_ds.HfTrainerDeepSpeedConfig)
    filled = set(re.findall(r'fill_(?:match|only)\(\s*"([^"]+)"', source))
    for stage, name in ((2, "deepspeed-zero2"), (3, "deepspeed-zero3")):
        config = deepspeed_config(name)
        assert config["zero_optimization"]["stage"] == stage

        def autos(node: Any, prefix: str = "") -> list[str]:
            if isinstance(node, dict):
                return [k for key, v in node.items() for k in autos(v, f"{prefix}{key}.")]
            return [prefix[:-1]] if node == "auto" else []

        assert autos(config) and set(autos(config)) <= filled, set(autos(config)) - filled
    assert deepspeed_config("deepspeed-zero3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_knob_arguments_refuse_cuda_only_choices_without_cuda() -> None:
    from cloudtune.train.knobs import knob_arguments

    with pytest.raises(JobInputError, match="8-bit AdamW runs CUDA kernels only"):
        knob_arguments(_train(hyperparameters={"optimizer": "adamw_bnb_8bit"}), cuda=False)
    args = knob_arguments(_train(distributed="deepspeed-zero3", hyperparameters={"warmup_steps": 7}), cuda=True)
    assert args["deepspeed"] == deepspeed_config("deepspeed-zero3") and args["warmup_steps"] == 7
    assert knob_arguments(_train(distributed="deepspeed-zero2"), cuda=False)["deepspeed"]["zero_optimization"][
        "stage"] == 2  # DeepSpeed's CPU accelerator trains the same stages


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_a_deepspeed_job_without_deepspeed_in_its_image_stops_with_one_line() -> None:
    from cloudtune.train.knobs import require_deepspeed

    with pytest.raises(JobInputError, match="deepspeed is not installed in this job's image. To fix: use an image"):
        require_deepspeed("deepspeed-zero3")


def test_flash_attention_without_flash_attn_in_the_image_stops_the_job_with_one_line() -> None:
    """In the job, flash_attention_2 where the image has no flash-attn is one JobInputError line (transformers' own
    error is an ImportError traceback from from_pretrained)."""
    from cloudtune.train.knobs import attention_kwargs

    train = TrainSpec.model_validate({"model": "m", "attn_implementation": "flash_attention_2"})
    if importlib.util.find_spec("flash_attn") is not None:
        assert attention_kwargs(train) == {"attn_implementation": "flash_attention_2"}
        return
    with pytest.raises(JobInputError, match="flash-attn is not installed in this job's image. To fix: .* or sdpa"):
        attention_kwargs(train)
