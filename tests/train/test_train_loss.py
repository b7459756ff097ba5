"""`train_loss` is a figure of the training, not of how it ran: the same after a resume as without one
(cloudtune.train.trainloss; the layout half is tests/distributed/test_train_loss_layout.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune.runtime.types import RuntimeContext  # noqa: E402
from cloudtune.spec import CheckpointSpec, TrainSpec  # noqa: E402
from cloudtune.train.causal_lm import run_causal_lm  # noqa: E402
from cloudtune.train.trainloss import logged_loss_sum, whole_training_loss  # noqa: E402

from tests.tiny_models import make_tiny_llama

SENTENCES = [f"the boat number {i % 4} sails north at dawn with {i % 3} crew" for i in range(48)]


def test_logged_windows_weigh_by_their_steps() -> None:
    history = [{"loss": 4.0, "step": 1}, {"eval_loss": 9.0, "step": 2}, {"loss": 2.0, "step": 4},
               {"loss": 1.0, "step": 4}, {"train_loss": 7.0, "step": 6}]
    assert logged_loss_sum(history, 4) == (4.0 + 2.0 * 3, 4)
    assert logged_loss_sum(history, 3) == (4.0, 1)
    # resumed at 4 after 2 more steps logged by this run (sum 3.0) and 1 unlogged step averaging 0.5 over ranks
    assert whole_training_loss(history, 4, 3.0, 0.5, 7) == pytest.approx((10.0 + 3.0 + 0.5) / 7)
    # a fresh run: nothing before it
    assert whole_training_loss([], 0, 6.0, 1.0, 4) == pytest.approx(7.0 / 4)


def _ctx(root: Path) -> RuntimeContext:
    data = root / "in" / "train"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in SENTENCES))
    return RuntimeContext.single_process(root, {"train": data}, job_name="loss", provider="local")


@pytest.mark.slow
def test_train_loss_is_the_same_after_a_resume(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "tiny-llama")
    spec = TrainSpec.model_validate({"model": str(model), "data": {"train": "train", "eval": None},
                                     "hyperparameters": {"max_steps": 7, "batch_size": 4, "max_seq_len": 32,
                                                         "learning_rate": 3e-3, "seed": 3}})
    ckpt = CheckpointSpec(every_steps=3, keep=3)  # saves at 3 and 6: neither on a logging step (1, 10, ...)
    reference = run_causal_lm(_ctx(tmp_path / "ref"), spec, ckpt)

    for step in (3, 6):
        ctx = _ctx(tmp_path / f"resumed-{step}")
        ctx.checkpoint_dir.mkdir(parents=True)
        shutil.copytree(tmp_path / "ref" / "checkpoints" / f"checkpoint-{step}", ctx.checkpoint_dir / f"checkpoint-{step}")
        resumed = run_causal_lm(ctx, spec, ckpt)
        assert resumed["global_step"] == reference["global_step"] == 7
        print(f"train_loss resumed at {step}: {resumed['train_loss']:.6f}, uninterrupted {reference['train_loss']:.6f}")
        assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
        written = json.loads((ctx.model_dir / "metrics.json").read_text())
        assert written["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_train_loss_is_the_same_with_gradient_accumulation(tmp_path: Path) -> None:
    """Another layout of the same steps: 1 process x batch 2 x 2 accumulation steps vs batch 4 (no dropout)."""
    model = make_tiny_llama(tmp_path / "tiny-llama")
    hp = {"max_steps": 3, "max_seq_len": 32, "learning_rate": 3e-3, "seed": 3}
    runs = {}
    for name, extra in (("batch4", {"batch_size": 4}), ("batch2x2", {"batch_size": 2, "gradient_accumulation_steps": 2})):
        spec = TrainSpec.model_validate({"model": str(model), "data": {"train": "train", "eval": None},
                                         "hyperparameters": hp | extra})
        runs[name] = run_causal_lm(_ctx(tmp_path / name), spec, CheckpointSpec(every_steps=1000, keep=1))
    print({k: v["train_loss"] for k, v in runs.items()})
    assert runs["batch2x2"]["train_loss"] == pytest.approx(runs["batch4"]["train_loss"], rel=1e-4)
