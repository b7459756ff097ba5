"""`status` of a Vertex AI job through the real SDK path (REST fake, Cloud Logging over HTTP): progress from the
job's own log lines while it runs; once it succeeded, the start and end Vertex reports, the duration and cost from
them, final metrics from the log (read once, then kept in the store) and `list`'s main metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.kit.cost import job_cost_usd
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobStore
from cloudtune.contracts.logfmt import step_line
from tests.gcp.conftest import BUCKET, SUFFIX, job_client, logging_client, settings, spec_from
from tests.gcp.fake_vertex import FakeVertex

pytest.importorskip("google.cloud.aiplatform_v1")
from cloudtune_gcp.launcher import GcpLauncher  # noqa: E402

FAST = RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02, deadline_s=3)


def test_a_vertex_job_reports_progress_then_duration_metrics_and_cost(gcs, tmp_path: Path, lock_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')
    spec = spec_from({"name": "gcp-progress", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"},
                      "train": {"model": "gpt2"}, "resources": {"accelerator": "L4"}}, tmp_path)
    with FakeVertex() as fake:
        launcher = GcpLauncher(job_client(fake.url), gcs, logging_client(fake.url), policy=FAST, poll_s=0.01,
                               home=tmp_path / "home", lock_dir=lock_dir)
        job = api.submit(launcher.plan(spec, settings(), suffix=SUFFIX), launcher=launcher, store=JobStore())
        native = job.ref().native_id
        job_id = native.rsplit("/", 1)[-1]
        fake.log(job_id, "workerpool0-0", "[cloudtune] eval before: eval_loss=3.1000 perplexity=22.20", 1)
        fake.log(job_id, "workerpool0-0", step_line(10, 100, 2.5, 4e-4, 0.1, 5210.0, 540.0), 2)
        fake.log(job_id, "workerpool0-0", step_line(20, 100, 2.25, 3.6e-4, 0.2, 5300.0, 480.0), 3)
        fake.set_state(native, "JOB_STATE_RUNNING")
        running = job.info()
        assert running["state"] == "running" and running["end"] is None
        assert running["progress"]["step"] == 20 and running["progress"]["total_steps"] == 100
        assert running["progress"]["eta_s"] == 480.0 and running["progress"]["loss"] == 2.25
        assert running["progress"]["eval_loss"] == 3.1

        fake.log(job_id, "workerpool0-0", "[cloudtune] train done: train_loss=2.1000 train_runtime_s=600.00 "
                 "tokens_per_second=5250.0 global_step=100", 4)
        fake.log(job_id, "workerpool0-0", "[cloudtune] eval after: eval_loss=1.9000 perplexity=6.69", 5)
        fake.jobs[native].update(startTime="2026-01-01T10:00:00Z", endTime="2026-01-01T10:12:00Z")
        fake.set_state(native, "JOB_STATE_SUCCEEDED")
        done = job.info()
        assert done["start"] == "2026-01-01T10:00:00Z" and done["end"] == "2026-01-01T10:12:00Z"
        assert done["duration_s"] == 720.0  # Vertex bills from start to end
        usd_per_hour = job.record.plan["estimated_usd_per_hour"]
        assert usd_per_hour and done["cost"]["usd"] == pytest.approx(job_cost_usd(720.0, usd_per_hour))
        assert done["metrics"]["eval_loss"] == 1.9 and done["metrics"]["train_loss"] == 2.1
        assert done["main_metric"] == {"name": "eval_loss", "value": 1.9}

        reads = len([r for r in fake.requests if "entries:list" in r[1]])
        env = dict(os.environ, CLOUDTUNE_HOME=str(tmp_path / "home"))
        listed = subprocess.run([sys.executable, "-m", "cloudtune.cli", "list", "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
        (row,) = json.loads(listed.stdout)
        assert row["duration_s"] == 720.0 and row["main_metric"] == {"name": "eval_loss", "value": 1.9}
        assert len([r for r in fake.requests if "entries:list" in r[1]]) == reads  # kept: the log is not read again
