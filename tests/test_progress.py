"""Progress and metrics without a model: the step line and its parsers, ETA and throughput, the atomic status file,
TensorBoard event files, the report targets, the status view of a job (times, metrics) and the one cost definition."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

import pytest

from cloudtune.errors import JobInputError
from cloudtune.jobprogress import job_times, local_progress, progress_from_log, summarize
from cloudtune.kit.cost import epoch_seconds, job_cost_usd
from cloudtune.local.statefile import write_state
from cloudtune.report.history import parse_log
from cloudtune.store import JobRecord
from cloudtune.contracts.logfmt import METRIC_REGEXES, step_line
from cloudtune.contracts.progress import (STATUS_FILE, ProgressReport, StepClock, format_duration, main_metric,
                                      read_status, write_status)
from cloudtune.contracts.tbevents import EventWriter, crc32c, read_scalars


def test_step_line_carries_total_throughput_and_eta_and_the_parsers_read_it() -> None:
    line = step_line(10, 380, 2.3141, 4e-05, 0.5, 5210.44, 123.4)
    assert line == ("[cloudtune] step=10/380 loss=2.3141 learning_rate=4e-05 epoch=0.50 tokens_per_second=5210.4 "
                    "eta_s=123 eta=2m03s")
    # the clouds' metric definitions (SageMaker MetricDefinitions are built from these) still match
    assert float(re.search(METRIC_REGEXES["train_loss"], line).group(1)) == 2.3141
    assert float(re.search(METRIC_REGEXES["learning_rate"], line).group(1)) == 4e-05
    assert float(re.search(METRIC_REGEXES["epoch"], line).group(1)) == 0.5
    assert float(re.search(METRIC_REGEXES["train_loss"], "[cloudtune] step=10 loss=2.5 x=1").group(1)) == 2.5  # old logs
    hist = parse_log(["2026-11-29T10:00:00Z algo-1 " + line])  # the report's parser: plain numbers
    assert hist.total_steps == 380 and hist.last_step == 10
    assert hist.steps["eta_s"] == [(10, 123.0)] and hist.steps["tokens_per_second"] == [(10, 5210.4)]
    # before throughput and ETA are known, and without a total
    assert step_line(1, None, 2.0, 0.1, 0.0) == "[cloudtune] step=1 loss=2.0000 learning_rate=0.1 epoch=0.00"


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0s"), (45.4, "45s"), (123, "2m03s"),
                                               (3720, "1h02m"), (2 * 86400 + 3 * 3600, "2d03h")])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_step_clock_eta_falls_and_throughput_is_per_window() -> None:
    clock = StepClock()
    clock.begin(step=0, tokens=0, total_steps=100, now=1000.0)
    tps, eta = clock.reading(10, 5000, now=1010.0)  # 1 s per step, 500 tokens/s
    assert tps == pytest.approx(500.0) and eta == pytest.approx(90.0)
    tps, eta2 = clock.reading(20, 7000, now=1020.0)
    assert tps == pytest.approx(200.0) and eta2 == pytest.approx(80.0) and eta2 < eta
    assert clock.reading(100, 9000, now=1100.0)[1] == 0.0
    resumed = StepClock()  # a resumed run times from the step it resumed at
    resumed.begin(step=50, tokens=0, total_steps=100, now=0.0)
    assert resumed.reading(60, 10, now=20.0)[1] == pytest.approx(80.0)
    assert StepClock().reading(5, 10, now=0.0) == (None, None)  # never begun: nothing known


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    write_status(tmp_path, {"step": 0, "loss": float("nan")})
    assert read_status(tmp_path)["loss"] is None  # valid JSON: non-finite numbers become null
    seen: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        for step in range(1, 300):
            write_status(tmp_path, {"step": step, "padding": "x" * 20000})
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        text = (tmp_path / STATUS_FILE).read_text()
        seen.append(json.loads(text)["step"])  # never a part-written file
    thread.join()
    assert seen == sorted(seen) and read_status(tmp_path)["step"] == 299
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temp file left
    assert read_status(tmp_path / "missing") is None


def test_progress_report_writes_the_file_and_tensorboard_scalars(tmp_path: Path) -> None:
    report = ProgressReport()
    report.open(tmp_path / "ckpt", tmp_path / "tb")
    report.update(phase="training", step=0, total_steps=20, started_at=time.time())
    report.update(step=10, loss=2.5, eta_s=None)  # None leaves a field as it was
    report.scalars(10, {"train/loss": 2.5})
    report.evaluated(10, {"eval_loss": 2.0, "eval_runtime": 0.3, "eval_samples_per_second": 9.0})
    report.metric("train_loss", 2.4)
    data = read_status(tmp_path / "ckpt")
    assert data["step"] == 10 and data["total_steps"] == 20 and "eta_s" not in data
    assert data["eval_loss"] == 2.0 and data["eval_step"] == 10
    assert data["metrics"] == {"eval_loss": 2.0, "perplexity": pytest.approx(math.exp(2.0)), "train_loss": 2.4}
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    assert read_scalars(events) == [(10, "train/loss", 2.5), (10, "eval/loss", 2.0),
                                    (10, "eval/perplexity", pytest.approx(math.exp(2.0)))]


def test_an_evaluation_repeated_at_a_step_is_one_history_point(tmp_path: Path) -> None:
    """eval_every dividing max_steps: the final evaluation repeats the last one's step; a sweep's intermediate values
    and the report's curves get one point per step, the latest value."""
    report = ProgressReport()
    report.open(tmp_path / "ckpt", None)
    report.evaluated(10, {"eval_loss": 2.0})
    report.evaluated(20, {"eval_loss": 1.5})
    report.evaluated(20, {"eval_loss": 1.4})
    assert read_status(tmp_path / "ckpt")["history"]["eval_loss"] == [[10, 2.0], [20, 1.4]]


def test_event_file_is_what_tensorboard_reads(tmp_path: Path) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    writer = EventWriter(tmp_path)
    writer.scalars(1, {"train/loss": 3.0, "train/learning_rate": 1e-3})
    writer.scalars(10, {"train/loss": 1.5})
    writer.scalars(11, {"eval/perplexity": 1e300, "train/loss": float("nan")})  # beyond float32: inf
    writer.close()
    assert read_scalars(writer.path)[-2][2] == math.inf and math.isnan(read_scalars(writer.path)[-1][2])
    assert [(s, t) for s, t, _ in read_scalars(writer.path)] == [(1, "train/loss"), (1, "train/learning_rate"),
                                                                  (10, "train/loss"), (11, "eval/perplexity"), (11, "train/loss")]
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")][:2] == [(1, 3.0), (10, 1.5)]


def test_report_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from cloudtune.train.arguments import report_targets

    assert report_targets("auto", {}) == ["tensorboard"]
    has_mlflow = importlib.util.find_spec("mlflow") is not None
    assert report_targets("auto", {"MLFLOW_TRACKING_URI": "file:/tmp/x"}) == ["tensorboard"] + (["mlflow"] if has_mlflow else [])
    assert report_targets("none", {"MLFLOW_TRACKING_URI": "file:/tmp/x"}) == []
    assert report_targets(["tensorboard"], {}) == ["tensorboard"]
    with pytest.raises(JobInputError, match="unknown"):
        report_targets(["comet"], {})
    monkeypatch.setattr("sys.path", [])  # nothing importable: an integration asked for but not installed
    with pytest.raises(JobInputError, match="wandb package is not installed"):
        report_targets(["wandb"], {})


def test_one_cost_definition() -> None:
    assert job_cost_usd(3600, 2.5) == 2.5
    assert job_cost_usd(90, 226.14) == pytest.approx(90 * 226.14 / 3600)  # $/h already covers all instances
    assert job_cost_usd(None, 2.5) is None and job_cost_usd(60, None) is None
    assert epoch_seconds("2026-11-29T10:00:00Z") == 1795946400.0
    assert epoch_seconds(0) is None and epoch_seconds("soon") is None


def record(**kw: object) -> JobRecord:
    base = dict(job_id="j-1", provider="aws", name="j", state="succeeded", created_at=1000.0, updated_at=9000.0,
                plan={"estimated_usd_per_hour": 36.0})
    return JobRecord(**(base | kw))  # type: ignore[arg-type]


def test_times_and_cost_come_from_what_the_provider_reports() -> None:
    billed = record(extra={"started_at": 1100.0, "ended_at": 1500.0, "billable_seconds": 300.0})
    view = summarize(billed, "succeeded", {"step": 10, "total_steps": 10, "eta_s": 5.0, "metrics": {"eval_loss": 1.5}})
    assert view["start"] == "1970-01-01T00:18:20Z" and view["end"] == "1970-01-01T00:25:00Z"
    assert view["duration_s"] == 300.0 and view["cost"]["usd"] == pytest.approx(3.0)  # 300 s x $36/h
    assert "eta_s" not in view["progress"] and view["main_metric"] == {"name": "eval_loss", "value": 1.5}
    ended = job_times(record(extra={"started_at": 1100.0, "ended_at": 1500.0}), "failed")
    assert ended["seconds"] == 400.0
    unknown = job_times(record(), "succeeded")  # no reported times: submission to the status that saw the end
    assert unknown["seconds"] == 8000.0 and "reported no times" in unknown["basis"]
    running = summarize(record(state="running"), "running", {"loss": 2.0}, now=1600.0)
    assert running["end"] is None and running["duration_s"] is None and running["elapsed_s"] == 600.0
    assert running["metrics"] == {"train_loss": 2.0} and main_metric(running["metrics"]) == ("train_loss", 2.0)


def test_progress_from_a_cloud_log() -> None:
    lines = ["[cloudtune] eval before: eval_loss=3.0000 perplexity=20.09",
             "algo-1 " + step_line(1, 20, 2.9, 0.001, 0.05, 100.0, 40.0),
             step_line(10, 20, 2.1, 0.0005, 0.5, 120.0, 20.0),
             "[cloudtune] eval step10: eval_loss=2.0000 accuracy=0.7500 f1=0.7000",
             "[cloudtune] train done: train_loss=2.2000 train_runtime_s=40.00 tokens_per_second=110.0 global_step=20",
             "[cloudtune] eval after: eval_loss=1.9000 accuracy=0.8000 f1=0.7500"]
    got = progress_from_log(lines)
    assert got["step"] == 20 and got["total_steps"] == 20 and got["loss"] == 2.1 and got["eta_s"] == 20.0
    assert got["eval_loss"] == 1.9 and got["eval_step"] == 20
    assert got["metrics"]["eval_accuracy"] == 0.8 and got["metrics"]["train_loss"] == 2.2
    assert main_metric(got["metrics"]) == ("eval_accuracy", 0.8)
    assert progress_from_log(["no cloudtune lines here"]) == {}


def test_sagemaker_status_carries_the_times_it_reports() -> None:
    launcher = pytest.importorskip("cloudtune_aws.launcher")
    from datetime import datetime, timezone

    described = {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "BillableTimeInSeconds": 412,
                 "TrainingStartTime": datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc),
                 "TrainingEndTime": datetime(2026, 11, 29, 10, 7, 30, tzinfo=timezone.utc)}
    st = launcher.map_status(described)
    assert st.state == "succeeded" and st.billable_s == 412.0
    assert st.ended_at - st.started_at == 450.0
    running = launcher.map_status({"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training",
                                   "BillableTimeInSeconds": 10})
    assert running.billable_s is None and running.started_at is None  # billed time is final only at the end


def test_a_long_phase_says_when_it_starts_and_how_long_it_took(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtune.contracts.logfmt import phase

    with phase("saving", "model to /tmp/m"):
        time.sleep(0.05)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[cloudtune] saving: model to /tmp/m"
    assert re.fullmatch(r"\[cloudtune\] saving: model to /tmp/m done in \d+\.\ds", out[1])


def test_a_retry_that_is_loading_shows_no_eta_of_the_attempt_before(tmp_path: Path) -> None:
    """The status file stays as the failed attempt left it until the retry logs a step: it is the earlier attempt's
    (written before the state's attempt_started_at), so the status says restarting, not an ETA counted down to 0 s."""
    job_dir, checkpoints = tmp_path / "job", tmp_path / "job" / "checkpoints"
    job_dir.mkdir()
    write_status(checkpoints, {"phase": "training", "step": 7, "total_steps": 16, "eta_s": 20.0})
    record = JobRecord("j1", "local", "j1", "running", time.time(), time.time(), native_id=str(job_dir),
                       extra={"checkpoint_uri": str(checkpoints)})
    write_state(job_dir, attempt=0, attempt_started_at=time.time() - 60)  # the first attempt: its own file
    now = time.time() + 5
    assert local_progress(record, now)["eta_s"] == pytest.approx(15.0, abs=0.5)
    time.sleep(0.05)
    write_state(job_dir, attempt=1, attempt_started_at=time.time())  # the retry began after the file was written
    shown = local_progress(record, now)
    assert shown["phase"] == "restarting" and "eta_s" not in shown and shown["step"] == 7
    time.sleep(0.05)
    write_status(checkpoints, {"phase": "training", "step": 8, "total_steps": 16, "eta_s": 18.0})
    later = local_progress(record, time.time() + 1)
    assert later["phase"] == "training" and later["eta_s"] > 0
