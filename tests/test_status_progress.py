"""`cloudtune status` and `list` on real local jobs: a running job's step/total, ETA and elapsed time from its status
file, a finished job's duration, ISO-8601 times, final metrics and cost; a cloud job's figures from its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from cloudtune.kit.cost import job_cost_usd  # noqa: E402
from cloudtune.local.launcher import LocalLauncher  # noqa: E402
from cloudtune.store import JobStore  # noqa: E402
from cloudtune.contracts.progress import STATUS_FILE  # noqa: E402
from tests.test_local_e2e import write_job  # noqa: E402
from tests.tiny_models import make_tiny_gpt2  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def seconds(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_finished_job_status_json_and_list(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model, hp={"max_steps": 12, "batch_size": 2})
    res = cli("launch", str(spec), "--json", home=home)
    assert res.returncode == 0, res.stderr[-3000:]
    job_id = json.loads(res.stdout)["job_id"]
    status = json.loads(cli("status", job_id, "--json", home=home).stdout)
    assert status["state"] == "succeeded"
    start, end = seconds(status["start"]), seconds(status["end"])  # ISO-8601 UTC
    state = json.loads((home / "jobs" / job_id / "state.json").read_text())
    assert start == pytest.approx(state["started_at"], abs=1) and end == pytest.approx(state["ended_at"], abs=1)
    assert status["duration_s"] == pytest.approx(end - start, abs=1)
    progress, metrics = status["progress"], status["metrics"]
    assert progress["step"] == progress["total_steps"] == 12 and "eta_s" not in progress
    model_metrics = json.loads((Path(status["model_uri"]) / "metrics.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(model_metrics["eval_loss_after"])
    assert metrics["train_loss"] == pytest.approx(model_metrics["train_loss"])
    cost = status["cost"]
    assert cost["usd"] == pytest.approx(job_cost_usd(cost["seconds"], cost["usd_per_hour"]))

    text = cli("status", job_id, home=home).stdout
    assert "step:   12/12" in text and "duration: " in text and "metrics: " in text and "eval_loss=" in text
    listed = json.loads(cli("list", "--json", home=home).stdout)
    assert listed[0]["main_metric"] == {"name": "eval_loss", "value": pytest.approx(metrics["eval_loss"])}
    assert listed[0]["duration_s"] == pytest.approx(status["duration_s"], abs=0.2)
    table = cli("list", home=home).stdout.splitlines()
    assert table[0].split() == ["JOB", "PROVIDER", "STATE", "CREATED", "DURATION", "METRIC"]
    assert table[1].split()[-1] == f"eval_loss={metrics['eval_loss']:.4f}"


def test_running_job_shows_step_total_eta_and_elapsed(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model, hp={"max_steps": 5000, "batch_size": 2})
    res = cli("launch", str(spec), "--detach", "--json", home=home)
    assert res.returncode == 0, res.stderr
    job = api.get_job(json.loads(res.stdout)["job_id"], launcher=LocalLauncher())
    try:
        status_file = Path(JobStore().get(job.job_id).extra["checkpoint_uri"]) / STATUS_FILE
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not ('"step": 1' in _read(status_file) and "eta_s" in _read(status_file)):
            time.sleep(0.5)
        first = json.loads(cli("status", job.job_id, "--json", home=home).stdout)
        assert first["state"] == "running" and first["end"] is None and first["duration_s"] is None
        p = first["progress"]
        assert p["total_steps"] == 5000 and 1 <= p["step"] < 5000 and p["eta_s"] > 0 and p["tokens_per_second"] > 0
        assert first["elapsed_s"] > 0 and seconds(first["start"]) <= time.time()
        assert "train_loss" in first["metrics"]
        text = cli("status", job.job_id, home=home).stdout
        assert "/5000" in text and "eta " in text and "elapsed: " in text
    finally:
        job.cancel()
        job.wait(timeout=60)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
