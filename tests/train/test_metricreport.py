"""The one metric reporter: on a real tiny fine-tune, each evaluation as a metric line (which the SageMaker regex
reads), in the hypertune file in cloudml-hypertune's own format, and in the status file's history; and MLflow when a
tracking URI is set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloudtune.contracts.metrics import HYPERTUNE_KEEP, metric_history, metric_line, metric_regex, parse_metric_line
from cloudtune.spec import CheckpointSpec
from cloudtune.train.causal_lm import run_causal_lm
from cloudtune.train.metricreport import MetricReporter
from cloudtune.contracts.progress import read_status

from .conftest import TEXTS, make_ctx, make_train, write_records


def test_line_regex_and_parse_agree() -> None:
    for value in (2.0100, 1.5e-05, 0.0, 123456.0):
        line = "2026-12-07T10:00:00Z [rank0]: " + metric_line("eval_loss", value, 40)
        found = re.search(metric_regex("eval_loss"), line)
        assert found and float(found.group(1)) == pytest.approx(value, rel=1e-5)
        assert parse_metric_line(line) == ("eval_loss", pytest.approx(value, rel=1e-5), 40)
    assert re.search(metric_regex("eval_loss"), metric_line("eval_loss", float("nan"), 1)) is None
    assert re.search(metric_regex("loss"), metric_line("eval_loss", 1.0, 1)) is None  # a name is matched whole


def test_recipe_reports_every_evaluation(tiny_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    hypertune = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(hypertune))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    inputs = {"train": write_records(tmp_path / "in/train/t.jsonl", [{"text": t} for t in TEXTS]).parent,
              "eval": write_records(tmp_path / "in/eval/e.jsonl", [{"text": t} for t in TEXTS[:4]]).parent}
    ctx = make_ctx(tmp_path, inputs)
    run_causal_lm(ctx, make_train(tiny_gpt2, batch_size=2, max_steps=8, eval_every=4), CheckpointSpec(every_steps=100))
    history = metric_history(capsys.readouterr().out.splitlines())
    assert [s for s, _ in history["eval_loss"]] == [0, 4, 8, 8]  # before, during (eval_every), after training
    assert [s for s, _ in history["train_loss"]] == [8]
    entries = [json.loads(line) for line in hypertune.read_text().splitlines()]
    losses = [e for e in entries if "eval_loss" in e]
    assert [e["global_step"] for e in losses] == ["0", "4", "8", "8"]
    assert all(list(e) == sorted(e) and e["trial"] == "7" and isinstance(e["eval_loss"], str) for e in losses)
    assert float(losses[-1]["eval_loss"]) == pytest.approx(history["eval_loss"][-1][1], rel=1e-5)
    status = read_status(ctx.checkpoint_dir)
    assert [s for s, _ in status["history"]["eval_loss"]] == [0, 4, 8]  # one point per step: the final evaluation's


def test_hypertune_file_keeps_the_last_hundred(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.metrics"
    reporter = MetricReporter({"CLOUD_ML_HP_METRIC_FILE": str(path)}, mlflow=False)
    for step in range(HYPERTUNE_KEEP + 5):
        reporter.report({"eval_loss": 1.0 / (step + 1), "eval_runtime": 3.0}, step)
    lines = path.read_text().splitlines()
    assert len(lines) == HYPERTUNE_KEEP and json.loads(lines[0])["global_step"] == "5"
    assert "eval_runtime" not in capsys.readouterr().out  # timings are not reported


def test_no_hypertune_file_off_vertex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    reporter = MetricReporter({}, mlflow=False)
    reporter.report({"eval_loss": 1.0}, 1)
    assert reporter.hypertune_path is None


def test_mlflow_when_a_tracking_uri_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the URI through the environment only: mlflow.set_tracking_uri would outlive this test (a module global)
    mlflow.set_experiment("metricreport")  # this store's: an earlier test's run left its experiment active
    reporter = MetricReporter(mlflow=True)
    reporter.report({"eval_loss": 2.5}, 4)
    reporter.report({"eval_loss": 2.0}, 8)
    run = mlflow.active_run()
    mlflow.end_run()
    values = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "eval_loss")
    assert [(m.step, m.value) for m in values] == [(4, 2.5), (8, 2.0)]
