"""Preference tuning end to end on a tiny GPT-2 (CPU): DPO, ORPO and KTO raise the chosen-over-rejected log-probability
margin on held-out pairs; LoRA DPO holds no second model; resume after a stop equals an uninterrupted run; an SFT
LoRA adapter is tuned on; the knobs reach the Trainer's arguments (read back from the checkpoint's
training_args.bin)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from cloudtune.errors import JobInputError
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train import run_recipe
from cloudtune.contracts.progress import read_status

from .conftest import make_ctx, write_records

DIRECTIONS = [("north", "south"), ("east", "west")]


def pairs(indices: range) -> list[dict[str, Any]]:
    """The rule: a boat numbered even sails north (odd: east) at dawn; the rejected answer names the opposite way
    at dusk. Held-out pairs are other boat numbers."""
    return [{"prompt": f"the boat number {i} sails",
             "chosen": f" {DIRECTIONS[i % 2][0]} at dawn",
             "rejected": f" {DIRECTIONS[i % 2][1]} at dusk"} for i in indices]


def unpaired(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "completion": r[key], "label": key == "chosen"}
            for r in records for key in ("chosen", "rejected")]


def margin(model_dir: Path, records: list[dict[str, Any]]) -> float:
    """Mean over `records` of log p(chosen | prompt) - log p(rejected | prompt) under the model at `model_dir`."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        model = AutoPeftModelForCausalLM.from_pretrained(str(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()

    def logp(prompt: str, answer: str) -> float:
        p = tok(prompt)["input_ids"]
        ids = torch.tensor([p + tok(answer)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].log_softmax(-1)
        return float(sum(logits[i, ids[0, i + 1]] for i in range(len(p) - 1, ids.shape[1] - 1)))

    return sum(logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in records) / len(records)


def pref_train(model: Path | str, method: str = "dpo", *, lora: dict | None = None, eval_name: str | None = None,
               beta: float = 0.1, **hp: Any) -> TrainSpec:
    hyper = {"max_steps": 12, "learning_rate": 1e-2, "batch_size": 8, "max_seq_len": 32, "seed": 3} | hp
    spec: dict[str, Any] = {"task": "preference", "model": str(model), "preference": {"method": method, "beta": beta},
                            "data": {"train": "train", "eval": eval_name}, "hyperparameters": hyper}
    if lora is not None:
        spec["lora"] = lora
    return TrainSpec.model_validate(spec)


def data_inputs(root: Path, records: list[dict[str, Any]], held_out: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    inputs = {"train": write_records(root / "in" / "train" / "pairs.jsonl", records).parent}
    if held_out is not None:
        inputs["eval"] = write_records(root / "in" / "eval" / "pairs.jsonl", held_out).parent
    return inputs


CKPT = CheckpointSpec(every_steps=6, keep=1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_method_raises_the_margin_on_held_out_pairs(method: str, tiny_gpt2: Path, tmp_path: Path, capsys) -> None:
    train_recs, held_out = pairs(range(0, 64)), pairs(range(100, 116))
    records = unpaired(train_recs) if method == "kto" else train_recs
    ctx = make_ctx(tmp_path, data_inputs(tmp_path, records, unpaired(held_out) if method == "kto" else held_out))
    before = margin(tiny_gpt2, held_out)
    beta = 0.1
    metrics = run_recipe(ctx, pref_train(tiny_gpt2, method, eval_name="eval", beta=beta), CKPT)
    after = margin(ctx.model_dir, held_out)
    out = capsys.readouterr().out
    assert metrics["global_step"] == 12 and metrics["tokens_per_second"] > 0
    assert not [k for k in metrics if k.startswith("perplexity")]  # exp of a preference loss is no perplexity
    assert after > before + 1.0, (method, before, after)
    status = read_status(ctx.checkpoint_dir)
    if method != "kto":  # KTO logs rewards of the desirable and undesirable examples (its own names)
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(status["metrics"])
        assert status["metrics"]["rewards/accuracies"] >= 0.5
        assert re.search(r"^\[cloudtune\] step=\d+/12 .* rewards/chosen=\S+ .*rewards/margins=", out, re.M)  # charted by the report
    assert f"{method}: beta {beta}" in out and "README.md written" in out


@pytest.mark.slow
def test_lora_dpo_holds_no_second_model(tiny_gpt2: Path, tmp_path: Path, capsys) -> None:
    ctx = make_ctx(tmp_path / "lora", data_inputs(tmp_path / "lora", pairs(range(32))))
    run_recipe(ctx, pref_train(tiny_gpt2, lora={"r": 4, "alpha": 8}, max_steps=2), CKPT)
    lora_out = capsys.readouterr().out
    full = make_ctx(tmp_path / "full", data_inputs(tmp_path / "full", pairs(range(32))))
    run_recipe(full, pref_train(tiny_gpt2, max_steps=2), CKPT)
    full_out = capsys.readouterr().out

    held = re.compile(r"reference model in memory: (\d+) parameters; policy (\d+)")
    lora_ref, lora_policy = map(int, held.search(lora_out).groups())
    full_ref, full_policy = map(int, held.search(full_out).groups())
    assert lora_ref == 0 and "adapter switched off" in lora_out  # measured on the trainer: its ref_model is None
    assert full_ref == full_policy > 0  # without LoRA, a frozen copy as large as the policy
    assert (ctx.model_dir / "adapter_config.json").is_file()


@pytest.mark.slow
def test_resume_after_a_stop_equals_an_uninterrupted_run(tiny_gpt2: Path, tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    records = pairs(range(48))
    whole = make_ctx(tmp_path / "whole", data_inputs(tmp_path / "whole", records))
    run_recipe(whole, pref_train(tiny_gpt2, max_steps=8, batch_size=4), CheckpointSpec(every_steps=3, keep=2))

    cut = make_ctx(tmp_path / "cut", data_inputs(tmp_path / "cut", records))
    monkeypatch.setenv("CLOUDTUNE_FAULT_AT", "before@3")  # SIGTERM while step 3 is saved: stop after step 4, exit 143
    with pytest.raises(SystemExit) as stopped:
        run_recipe(cut, pref_train(tiny_gpt2, max_steps=8, batch_size=4), CheckpointSpec(every_steps=3, keep=2))
    assert stopped.value.code == 143 and not (cut.model_dir / "model.safetensors").exists()
    assert sorted(p.name for p in cut.checkpoint_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    monkeypatch.delenv("CLOUDTUNE_FAULT_AT")
    run_recipe(cut, pref_train(tiny_gpt2, max_steps=8, batch_size=4), CheckpointSpec(every_steps=3, keep=2))

    a, b = load_file(str(whole.model_dir / "model.safetensors")), load_file(str(cut.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_sft_lora_adapter_then_dpo(tiny_gpt2: Path, tmp_path: Path) -> None:
    """What `train.model: job:<SFT JOB>` hands the job: the SFT job's model dir (here a LoRA adapter, merged onto its
    base before preference tuning)."""
    sft = make_ctx(tmp_path / "sft", {"train": write_records(tmp_path / "sft" / "in" / "t.jsonl", [
        {"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs(range(32))]).parent})
    run_recipe(sft, TrainSpec.model_validate({"model": str(tiny_gpt2), "data": {"train": "train", "eval": None},
                                              "lora": {"r": 4, "alpha": 8},
                                              "hyperparameters": {"max_steps": 2, "max_seq_len": 32}}), CKPT)
    assert (sft.model_dir / "adapter_config.json").is_file()
    dpo = make_ctx(tmp_path / "dpo", data_inputs(tmp_path / "dpo", pairs(range(32))))
    metrics = run_recipe(dpo, pref_train(sft.model_dir, max_steps=2), CKPT)
    assert metrics["global_step"] == 2 and (dpo.model_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_knobs_reach_the_trainer_arguments(tiny_gpt2: Path, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, data_inputs(tmp_path, pairs(range(16))))
    train = pref_train(tiny_gpt2, "orpo", max_steps=2, optimizer="adafactor", lr_scheduler="cosine", warmup_steps=1,
                       max_grad_norm=0.5)
    train = train.model_copy(update={"attn_implementation": "eager"})
    run_recipe(ctx, train, CheckpointSpec(every_steps=2, keep=1))
    args = torch.load(str(ctx.checkpoint_dir / "checkpoint-2" / "training_args.bin"), weights_only=False)
    assert (str(args.optim.value), str(args.lr_scheduler_type.value)) == ("adafactor", "cosine")
    assert (args.warmup_steps, args.max_grad_norm, args.beta) == (1, 0.5, 0.1)
    assert type(args).__name__ == "ORPOConfig"
    from cloudtune.train.loading import model_load_kwargs

    assert model_load_kwargs(train, "causal-lm", "cpu")["attn_implementation"] == "eager"  # from_pretrained's keyword


def test_data_errors_name_the_file_line_and_field(tiny_gpt2: Path, tmp_path: Path) -> None:
    recs = pairs(range(4))
    recs[2] = {"prompt": "p", "chosen": "a"}
    ctx = make_ctx(tmp_path, data_inputs(tmp_path, recs))
    with pytest.raises(JobInputError, match=r"pairs.jsonl, line 3: field 'rejected' is missing.*To fix"):
        run_recipe(ctx, pref_train(tiny_gpt2, max_steps=1), CKPT)


def test_health_warns_on_a_collapsing_margin_and_on_both_rewards_falling() -> None:
    from cloudtune.train.preference import margin_warning

    rising = [(10 * i, 0.1 * i, -0.1 * i, 0.2 * i) for i in range(1, 6)]
    assert margin_warning(rising) is None
    collapsed = rising + [(60, 0.01, 0.0, 0.15), (70, 0.0, 0.0, 0.1), (80, 0.0, 0.0, 0.05)]
    assert "the reward margin collapsed to 0.05 (best 1)" in margin_warning(collapsed)
    both = [(10, -0.1, -0.2, 0.1), (20, -0.3, -0.6, 0.3), (30, -0.6, -1.2, 0.6), (40, -1.0, -2.0, 1.0)]
    assert "the chosen reward fell with the rejected one (-0.1 -> -1;" in margin_warning(both)


@pytest.mark.slow
def test_precomputed_reference_holds_no_model_and_trains_as_the_frozen_copy(tiny_gpt2: Path, tmp_path: Path,
                                                                            capsys) -> None:
    losses = {}
    for reference in ("copy", "precomputed"):
        ctx = make_ctx(tmp_path / reference, data_inputs(tmp_path / reference, pairs(range(16))))
        spec = pref_train(tiny_gpt2, max_steps=2).model_dump()
        spec["preference"]["reference"] = reference
        losses[reference] = run_recipe(ctx, TrainSpec.model_validate(spec), CKPT)["train_loss"]
        held = re.search(r"reference model in memory: (\d+) parameters", capsys.readouterr().out)
        assert (int(held.group(1)) == 0) == (reference == "precomputed")
    assert losses["precomputed"] == pytest.approx(losses["copy"], rel=1e-4)


@pytest.mark.parametrize("cells", [("true", "False"), ("1", "0"), ("TRUE", "false")])
def test_kto_labels_in_a_csv_read_as_trls_booleans(cells: tuple[str, str], tmp_path: Path) -> None:
    """Every CSV cell is text: KTO's labels written true/false (any case) or 1/0 pass the check and reach TRL as its
    boolean `label` column; other text is refused with the line and the fix."""
    from cloudtune.errors import JobInputError
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.train.preference import read_preference_data

    data = tmp_path / "kto.csv"
    data.write_text(f"prompt,completion,label\nQ? ,Good.,{cells[0]}\nQ? ,Bad.,{cells[1]}\n")
    ctx = RuntimeContext.single_process(tmp_path / "job", {"train": data})
    ds, shape, _ = read_preference_data(ctx, "train", "kto", "kto.csv")
    assert shape == "unpaired" and ds.features["label"].dtype == "bool" and ds["label"] == [True, False]
    data.write_text("prompt,completion,label\nQ? ,Good.,yes please\n")
    with pytest.raises(JobInputError, match=r"kto.csv, line 2: field 'label' must be true or false .*To fix: write "
                                            r"true or false \(in a CSV cell: true, false, 1 or 0\)"):
        read_preference_data(ctx, "train", "kto", "kto.csv")


def test_pairs_whose_prompt_fills_max_seq_len_are_counted_or_stop_the_job(tiny_gpt2: Path, tmp_path: Path,
                                                                           capsys) -> None:
    """TRL's DPO drops a pair whose prompt alone fills max_length: the job says how many, and when none is left it
    stops with one line naming max_seq_len (TRL's own error is a sampler's `num_samples=0`)."""
    long_prompt = "the boat number sails " * 40
    recs = pairs(range(8))
    recs[:2] = [dict(r, prompt=long_prompt) for r in recs[:2]]
    ctx = make_ctx(tmp_path / "some", data_inputs(tmp_path / "some", recs))
    run_recipe(ctx, pref_train(tiny_gpt2, max_steps=1, batch_size=2), CKPT)
    assert "data: 2 of 8 training records dropped by TRL: their prompt alone fills max_seq_len (32 tokens)" \
        in capsys.readouterr().out
    ctx = make_ctx(tmp_path / "all", data_inputs(tmp_path / "all", [dict(r, prompt=long_prompt) for r in recs]))
    with pytest.raises(JobInputError, match=r"TRL kept none of its 8 training records: every prompt fills "
                                            r"train.hyperparameters.max_seq_len \(32 tokens\). To fix: raise"):
        run_recipe(ctx, pref_train(tiny_gpt2, max_steps=1, batch_size=2), CKPT)


def test_the_model_card_says_the_method_and_the_data_and_only_this_tasks_options(tmp_path: Path) -> None:
    """A preference card names its method, beta, reference and data fields; no text-to-image option is listed; a
    Hub id is the card's base_model metadata, a model from an input, a path, a URI or another job is not, whatever
    its folder is called (the Hub would link `tiny-musicgen` to someone else's model)."""
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.train.card import model_card
    from cloudtune.train.models import hub_model_id

    (tmp_path / "tiny-musicgen").mkdir()
    ctx = RuntimeContext.single_process(tmp_path / "job", {"tiny-musicgen": tmp_path / "tiny-musicgen"},
                                        job_name="card", provider="local")
    ids = {model: hub_model_id(ctx, pref_train(model)) for model in
           ("gpt2", "Qwen/Qwen2.5-0.5B", "tiny-musicgen", str(tmp_path / "tiny-musicgen"), "s3://b/model", "job:sft",
            "./model", "../model")}
    assert ids == {"gpt2": "gpt2", "Qwen/Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B", "tiny-musicgen": None,
                   str(tmp_path / "tiny-musicgen"): None, "s3://b/model": None, "job:sft": None, "./model": None,
                   "../model": None}
    train = pref_train("./model", "kto", lora={"r": 4})
    card = model_card(train, base_model="../model", hub_id=None,
                      data_info={"format": "unpaired", "train_examples": 8}, metrics={}, precision="fp32")
    assert "- preference data: unpaired (prompt + completion + label)" in card
    assert "- method: kto, beta 0.1, reference auto" in card and "# Fine-tuned ../model" in card
    assert "base_model:" not in card and not any(f"| {k} |" in card for k in ("resolution", "snr_gamma", "cache_latents"))
    assert 'base_model: "gpt2"' in model_card(pref_train("gpt2"), base_model="gpt2", hub_id="gpt2", data_info={},
                                              metrics={}, precision="fp32")
