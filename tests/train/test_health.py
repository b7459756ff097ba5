"""Training health checks (cloudtune.train.health) on tiny models built locally, CPU only: a learning rate that
diverges, a NaN between logged steps, a data set the model overfits (and keep_best), a run forced into repetition,
and a healthy run with every check on that raises no alarm."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune.runtime import exitcodes  # noqa: E402
from cloudtune.spec import CheckpointSpec, TrainSpec  # noqa: E402
from cloudtune.train import causal_lm, flow  # noqa: E402
from cloudtune.train.causal_lm import run_causal_lm  # noqa: E402
from cloudtune.train.models import load_pretrained  # noqa: E402
from cloudtune.train.checkpoints import CheckpointStore, list_checkpoints  # noqa: E402
from cloudtune.train.health import (  # noqa: E402
    DIVERGED_PREFIX,
    HEALTH_PREFIX,
    OverfitTracker,
    SpikeDetector,
    collapse_prompts,
    ngram_stats,
)

from tests.train.conftest import TEXTS, make_ctx, make_train, write_records

OTHER_TEXTS = [f"roast {i % 5} kilos of beans until the second crack at {200 + i} degrees" for i in range(8)]


def inputs(root: Path, train: list[str], eval_: list[str]) -> dict[str, Path]:
    return {"train": write_records(root / "in" / "train" / "t.jsonl", [{"text": t} for t in train]).parent,
            "eval": write_records(root / "in" / "eval" / "e.jsonl", [{"text": t} for t in eval_]).parent}


def alarms(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith((HEALTH_PREFIX, "[cloudtune] error:"))]


# ----- the pieces ---------------------------------------------------------------------------------------------------

def test_spike_detector_stops_on_nan_inf_and_spikes_not_on_noise() -> None:
    assert SpikeDetector().see(float("nan")) is not None
    assert SpikeDetector().see(float("inf")) is not None
    noisy = SpikeDetector()
    for i in range(200):  # a noisy but healthy run: +-40% around a slowly falling loss
        assert noisy.see((3.0 - i / 100) * (1.4 if i % 3 == 0 else 0.7)) is None
    early = SpikeDetector()
    assert early.see(6.0) is None and early.see(5.5) is None
    assert "jumped" in (early.see(1951.0) or "")
    late = SpikeDetector(window=50, factor=3.0, mads=10.0)
    for i in range(30):
        late.see(2.0 + 0.05 * (i % 4))
    assert late.see(2.4) is None
    assert "far above its recent range" in (late.see(9.0) or "")


def test_overfit_tracker_needs_patience_and_a_falling_train_loss() -> None:
    tracker = OverfitTracker(patience=3)
    assert tracker.see(10, 2.0, 3.0) is None
    assert tracker.see(20, 1.8, 2.5) is None  # best
    assert tracker.see(30, 1.9, 2.0) is None
    assert tracker.see(40, 2.0, 1.5) is None
    warning = tracker.see(50, 2.2, 1.0)
    assert warning and "overfitting" in warning and "step 20" in warning
    assert tracker.see(60, 2.3, 0.9) is None  # once per best evaluation
    flat = OverfitTracker(patience=2)  # eval loss up, train loss up too: not overfitting
    for step, (ev, tr) in enumerate([(1.0, 1.0), (1.1, 1.2), (1.2, 1.3)]):
        assert flat.see(step, ev, tr) is None


def test_ngram_stats_and_prompts() -> None:
    rep, distinct = ngram_stats([[7] * 32, [7] * 32])
    assert rep > 0.9 and distinct < 0.05
    rep, distinct = ngram_stats([list(range(32)), list(range(100, 132))])
    assert rep == 0.0 and distinct == 1.0
    rows = [{"input_ids": [1, 2, 3, 4, 5, 6], "labels": [-100, -100, 3, 4, 5, 6]},
            {"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}]
    assert collapse_prompts(rows, 4) == [[1, 2], [1, 2]]


def test_protected_checkpoint_survives_rotation(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    store.protect(10)
    for step in (10, 20, 30):
        tmp = store.prepare(step)
        (tmp / "w.bin").write_bytes(b"x" * step)
        store.commit(tmp, step)
    assert [c.step for c in list_checkpoints(tmp_path)] == [10, 30]
    store.protect(30)
    tmp = store.prepare(40)
    (tmp / "w.bin").write_bytes(b"y")
    store.commit(tmp, 40)
    assert [c.step for c in list_checkpoints(tmp_path)] == [30, 40]


def test_spec_defaults_and_keep_best_needs_evaluations() -> None:
    train = TrainSpec.model_validate({"model": "m"})
    health = train.health
    assert (health.divergence, health.overfitting, health.collapse, health.patience) == (True, True, None, 3)
    assert (health.spike_window, health.spike_factor, health.prompts, health.max_new_tokens) == (50, 3.0, 4, 32)
    assert train.keep_best is False and train.report_to == "auto"
    assert "health" not in train.model_dump() and "keep_best" not in train.model_dump()  # job configs unchanged
    assert TrainSpec.model_validate({"model": "m", "report_to": ["mlflow", "wandb"]}).report_to == ["mlflow", "wandb"]
    with pytest.raises(ValueError, match="keep_best"):
        TrainSpec.model_validate({"model": "m", "keep_best": True})
    with pytest.raises(ValueError):
        TrainSpec.model_validate({"model": "m", "health": {"spike_factor": 1.0}})


def test_diverged_exit_class_is_never_retried() -> None:
    assert exitcodes.classify(exitcodes.EXIT_DIVERGED) is exitcodes.ExitClass.DIVERGED
    assert not exitcodes.retried(exitcodes.ExitClass.DIVERGED)


# ----- end to end ---------------------------------------------------------------------------------------------------

def test_diverging_learning_rate_stops_with_one_line_and_exit_66(tiny_gpt2: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_ctx(tmp_path / "job", inputs(tmp_path, TEXTS * 2, TEXTS[:8]))
    train = make_train(tiny_gpt2, learning_rate=10, epochs=3, batch_size=4)
    with pytest.raises(SystemExit) as stop:
        run_causal_lm(ctx, train, CheckpointSpec(every_steps=5, keep=2))
    assert stop.value.code == exitcodes.EXIT_DIVERGED == 66
    lines = alarms(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith(DIVERGED_PREFIX + " at step "), lines
    assert "last good checkpoint:" in lines[0] and "learning_rate" in lines[0] and "warmup" in lines[0]
    assert not ctx.model_dir.exists() or not any(ctx.model_dir.iterdir())  # no model written as if it succeeded


def _nan_on_training_forward(model: Any, nth: int) -> None:
    """Make the model's loss NaN on its `nth` training forward (a stand-in for an fp16 overflow)."""
    calls = {"n": 0}

    def hook(module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        if module.training and getattr(output, "loss", None) is not None:
            calls["n"] += 1
            if calls["n"] == nth:
                output.loss = output.loss * float("nan")
        return output

    model.register_forward_hook(hook, with_kwargs=True)


def test_nan_between_logged_steps_stops_at_that_step(tiny_gpt2: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The Trainer logs steps 1, 10, 20, ... and its nan filter hides a NaN step's loss: step 4 is caught anyway."""
    from cloudtune.train.packing import CausalLMCollator

    ctx = make_ctx(tmp_path / "job", inputs(tmp_path, TEXTS * 2, TEXTS[:8]))
    train = make_train(tiny_gpt2, epochs=1, batch_size=4)
    tokenizer, model = load_pretrained(str(tiny_gpt2), max_seq_len=48)
    train_ds, eval_ds, info = causal_lm.prepare_lm_data(ctx, train, tokenizer)
    _nan_on_training_forward(model, nth=4)
    with pytest.raises(SystemExit) as stop:
        flow.run_training(ctx, train, CheckpointSpec(every_steps=2, keep=5), processing_class=tokenizer, model=model,
                               train_ds=train_ds, eval_ds=eval_ds, collator=CausalLMCollator(tokenizer.pad_token_id),
                               base_model=str(tiny_gpt2), data_info=info)
    assert stop.value.code == 66
    lines = alarms(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith(DIVERGED_PREFIX + " at step 4: the loss is nan"), lines
    assert "checkpoint-2 (step 2)" in lines[0]  # step 3's weights gave the NaN: checkpoint 2 is the last good one


def test_overfitting_is_reported_and_keep_best_writes_the_best_weights(tiny_gpt2: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    ctx = make_ctx(tmp_path / "job", inputs(tmp_path, TEXTS[:4], OTHER_TEXTS))
    train = make_train(tiny_gpt2, learning_rate=1e-2, epochs=40, batch_size=4, eval_every=4)
    train = train.model_copy(update={"keep_best": True})
    metrics = run_causal_lm(ctx, train, CheckpointSpec(every_steps=8, keep=1))
    out = capsys.readouterr().out
    warnings = [ln for ln in alarms(out) if "overfitting" in ln]
    assert len(warnings) >= 1 and "stayed above its best" in warnings[0], alarms(out)
    best = int(metrics["best_step"])
    assert best < metrics["global_step"] and math.isclose(metrics["eval_loss_after"], metrics["best_eval_loss"], rel_tol=1e-4)
    kept = [c.path for c in list_checkpoints(ctx.checkpoint_dir) if c.step == best]
    assert kept, "the best evaluation's checkpoint was rotated away"
    written, saved = load_file(str(ctx.model_dir / "model.safetensors")), load_file(str(kept[0] / "model.safetensors"))
    assert written.keys() == saved.keys() and all(torch.equal(written[k], saved[k]) for k in written)


@pytest.fixture(scope="module")
def diverse_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with weights drawn at std 0.3: its greedy outputs vary with the prompt (the default init's
    repeat one token whatever the prompt, leaving no diversity for a collapse to lose)."""
    from tests.tiny_models import make_tiny_gpt2
    from transformers import AutoModelForCausalLM

    path = make_tiny_gpt2(tmp_path_factory.mktemp("diverse") / "m")
    model = AutoModelForCausalLM.from_pretrained(str(path))
    torch.manual_seed(0)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.3)
    model.save_pretrained(str(path))
    return path


def test_run_forced_into_repetition_warns_of_collapse(diverse_base: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_ctx(tmp_path / "job", inputs(tmp_path, ["a a a a a a a a a a a a a a a a a a a a"] * 16, OTHER_TEXTS))
    train = make_train(diverse_base, learning_rate=1e-2, epochs=4, batch_size=8, eval_every=4)
    run_causal_lm(ctx, train, CheckpointSpec(every_steps=50, keep=1))
    warnings = [ln for ln in alarms(capsys.readouterr().out) if "collapse" in ln]
    assert len(warnings) == 1 and "repeats itself" in warnings[0], warnings


def test_healthy_run_with_every_check_on_raises_no_alarm(tiny_gpt2: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_ctx(tmp_path / "job", inputs(tmp_path, TEXTS * 2, TEXTS[:8]))
    train = TrainSpec.model_validate({
        "model": str(tiny_gpt2), "data": {"train": "train", "eval": "eval"}, "keep_best": True,
        "health": {"divergence": True, "overfitting": True, "collapse": True},
        "hyperparameters": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 48, "seed": 7,
                            "eval_every": 4}})
    metrics = run_causal_lm(ctx, train, CheckpointSpec(every_steps=10, keep=2))
    out = capsys.readouterr().out
    assert [ln for ln in alarms(out) if "keep_best" not in ln] == []
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert (ctx.model_dir / "model.safetensors").is_file()
