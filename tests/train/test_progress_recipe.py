"""Progress on a real (tiny) fine-tune: step N/total lines with throughput and a falling ETA, the status file next to
the checkpoints, TensorBoard event files in the log dir, and MLflow only when a tracking URI is set."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from cloudtune.spec import CheckpointSpec
from cloudtune.train.causal_lm import run_causal_lm
from cloudtune.contracts.progress import STATUS_FILE, read_status
from cloudtune.contracts.tbevents import read_scalars

from .conftest import TEXTS, make_ctx, make_train, write_records

STEP = re.compile(r"^\[cloudtune\] step=(\d+)/(\d+) loss=(\S+) learning_rate=\S+ epoch=\S+"
                  r"(?: tokens_per_second=(\S+) eta_s=(\d+) eta=(\S+))?$", re.M)


def run(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> tuple[object, dict, str]:
    inputs = {"train": write_records(tmp_path / "in/train/t.jsonl", [{"text": t} for t in TEXTS]).parent,
              "eval": write_records(tmp_path / "in/eval/e.jsonl", [{"text": t} for t in TEXTS[:4]]).parent}
    ctx = make_ctx(tmp_path, inputs)
    metrics = run_causal_lm(ctx, make_train(model, batch_size=2, max_steps=31, eval_every=20),
                            CheckpointSpec(every_steps=100, keep=1))
    return ctx, metrics, capsys.readouterr().out


def test_progress_lines_status_file_and_tensorboard(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx, metrics, out = run(tmp_path, tiny_gpt2, capsys)
    steps = [(int(m[1]), int(m[2]), m[4], m[5]) for m in STEP.finditer(out)]
    assert [s[0] for s in steps] == [1, 10, 20, 30] and {s[1] for s in steps} == {31}
    assert all(tps is not None and float(tps) > 0 for _, _, tps, _ in steps)
    etas = [int(eta) for *_, eta in steps]
    # ETA present and never rising (whole seconds: a fast machine may finish this tiny run within one)
    assert etas == sorted(etas, reverse=True) and etas[-1] >= 0

    status = read_status(ctx.checkpoint_dir)  # the last write: training done, then the final evaluation
    assert status["step"] == status["total_steps"] == 31 and status["phase"] == "done" and status["eta_s"] == 0
    assert status["eval_step"] == 31 and status["eval_loss"] == pytest.approx(metrics["eval_loss_after"])
    assert status["metrics"]["train_loss"] == pytest.approx(metrics["train_loss"])
    assert status["metrics"]["global_step"] == 31 and status["metrics"]["tokens_per_second"] > 0
    assert sorted(p.name for p in ctx.checkpoint_dir.iterdir() if not p.name.startswith("checkpoint-")) == [STATUS_FILE]

    (events,) = ctx.log_dir.glob("events.out.tfevents.*")  # in the log dir each cloud serves
    scalars = read_scalars(events)
    assert [s for s, tag, _ in scalars if tag == "train/loss"] == [1, 10, 20, 30]
    evals = [s for s, tag, _ in scalars if tag == "eval/loss"]
    assert evals[0] == 0 and 20 in evals and evals[-1] == 31  # before, during, after
    logged = {int(m[1]): float(m[3]) for m in STEP.finditer(out)}
    assert {s: round(v, 4) for s, tag, v in scalars if tag == "train/loss"} == pytest.approx(logged, abs=1e-4)
    assert not (tmp_path / "mlruns").exists() and not Path("mlruns").exists()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_when_a_tracking_uri_is_set(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "progress-test")
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "0")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 refuses a file store unless told
    try:
        run(tmp_path / "job", tiny_gpt2, capsys)
    finally:
        import mlflow

        mlflow.end_run()  # the job's run stays open until its process exits: this process goes on

    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("progress-test")
    (found,) = client.search_runs([experiment.experiment_id])
    assert [m.step for m in client.get_metric_history(found.info.run_id, "loss")] == [1, 10, 20, 30]
    assert "eval_loss" in found.data.metrics


@pytest.mark.parametrize(("report_to", "env", "integrations", "tensorboard"), [
    ("auto", {}, [], True),
    ("none", {"MLFLOW_TRACKING_URI": "file:/nowhere"}, [], False),
    (["tensorboard"], {"MLFLOW_TRACKING_URI": "file:/nowhere"}, [], True),
])
def test_report_to_reaches_the_training_arguments(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  report_to: object, env: dict, integrations: list,
                                                  tensorboard: bool) -> None:
    from cloudtune.train.arguments import training_arguments

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    train = make_train(tiny_gpt2).model_copy(update={"report_to": report_to})
    args = training_arguments(make_ctx(tmp_path, {}), train, CheckpointSpec())
    assert list(args.report_to) == integrations  # TensorBoard is cloudtune's own writer, never transformers'
    assert args.ct_tensorboard_dir == (str(tmp_path / "logs") if tensorboard else None)


def test_a_resumed_run_counts_the_training_time_of_every_attempt(tmp_path: Path) -> None:
    """train_runtime_s and tokens/s cover the whole run: the attempts before a resume left their training seconds
    (`trained_s`) in the status file next to the checkpoints; a resume from checkpoints without that file falls
    back to this attempt's own time and tokens."""
    from types import SimpleNamespace

    from transformers import TrainerState

    from cloudtune.contracts.progress import write_status
    from cloudtune.train.callbacks import LogCallback

    write_status(tmp_path, {"phase": "training", "step": 3, "trained_s": 10.0})
    args = SimpleNamespace(output_dir=str(tmp_path), report_to=[])
    resumed = TrainerState(global_step=3, max_steps=8, num_input_tokens_seen=300)
    log_cb = LogCallback()
    log_cb.on_evaluate(args, resumed, None, metrics={"eval_loss": 2.0})  # the evaluation before training writes first
    log_cb.on_train_begin(args, resumed, None)
    assert read_status(tmp_path)["trained_s"] >= 10.0  # this attempt carries the earlier time on
    resumed.num_input_tokens_seen = 800
    assert log_cb.whole_run(5.0, resumed) == (15.0, pytest.approx(800 / 15.0))

    (tmp_path / STATUS_FILE).unlink()
    unknown = LogCallback()
    unknown.on_train_begin(args, TrainerState(global_step=3, max_steps=8, num_input_tokens_seen=300), None)
    assert unknown.whole_run(5.0, resumed) == (5.0, pytest.approx(500 / 5.0))
    fresh = LogCallback()
    fresh.on_train_begin(args, TrainerState(global_step=0, max_steps=8, num_input_tokens_seen=0), None)
    assert fresh.whole_run(5.0, resumed) == (5.0, pytest.approx(800 / 5.0))


def test_a_warmup_longer_than_the_run_is_warned_about_when_training_begins(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without max_steps the run's length is known only when training begins (epochs x data): the job says so once
    when the warmup covers it (the spec refuses it where max_steps is given)."""
    from types import SimpleNamespace

    from transformers import TrainerState

    from cloudtune.train.callbacks import LogCallback

    args = SimpleNamespace(output_dir=str(tmp_path), report_to=[], warmup_steps=50)
    LogCallback().on_train_begin(args, TrainerState(global_step=0, max_steps=8), None)
    assert "[cloudtune] warning: hyperparameters.warmup_steps (50) is not below this run's 8" in capsys.readouterr().out
    LogCallback().on_train_begin(SimpleNamespace(output_dir=str(tmp_path), report_to=[], warmup_steps=0.1),
                                 TrainerState(global_step=0, max_steps=8), None)
    LogCallback().on_train_begin(SimpleNamespace(output_dir=str(tmp_path), report_to=[], warmup_steps=3),
                                 TrainerState(global_step=0, max_steps=8), None)
    assert "warmup" not in capsys.readouterr().out  # a ratio, or a warmup within the run
