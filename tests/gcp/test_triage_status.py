"""Failure triage of a cloud job through the real SDK path: a Vertex AI custom job (the REST fake, Cloud Logging over
HTTP) fails; `Job.info()` names the cause from Vertex's error and the job's log tail, keeps it in the store, and a
log that cannot be read (Cloud Logging down) still gives a cause from the error alone, with a note."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobStore
from tests.gcp.conftest import BUCKET, SUFFIX, job_client, logging_client, settings, spec_from
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")
FAST = RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02, deadline_s=3)
NCCL = ("[rank1]:[E1206 18:44:12.715298746 ProcessGroupNCCL.cpp:607] [Rank 1] Watchdog caught collective operation "
        "timeout: WorkNCCL(SeqNum=1580, OpType=ALLREDUCE, NumelIn=466119168, NumelOut=466119168, Timeout(ms)=600000) "
        "ran for 600060 milliseconds before timing out.")


def _failed_job(fake: FakeVertex, gcs, tmp_path: Path, lock_dir: Path, logging_url: str) -> tuple[api.Job, str]:
    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')
    spec = spec_from({"name": "gcp-triage", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"},
                      "train": {"model": "gpt2"}}, tmp_path)
    launcher = GcpLauncher(job_client(fake.url), gcs, logging_client(logging_url), policy=FAST, poll_s=0.01,
                           home=tmp_path / "home", lock_dir=lock_dir)
    job = api.submit(launcher.plan(spec, settings(), suffix=SUFFIX), launcher=launcher, store=JobStore())
    return job, job.ref().native_id


def test_a_failed_vertex_job_shows_its_cause(gcs, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    with FakeVertex() as fake:
        job, native = _failed_job(fake, gcs, tmp_path, lock_dir, fake.url)
        fake.log(native.rsplit("/", 1)[-1], "workerpool0-0", "[cloudtune] step=10/100 loss=2.31", 1)
        fake.log(native.rsplit("/", 1)[-1], "workerpool1-0", NCCL, 2)
        fake.set_state(native, "JOB_STATE_FAILED", error="The replica workerpool1-0 exited with a non-zero status of 1.")
        cause = job.info()["cause"]
        assert cause["cause"] == "collective_timeout" and cause["fix"] in cause["line"] and "note" not in cause
        assert JobStore().get(job.job_id).extra["triage"] == cause
        reads = len([r for r in fake.requests if "entries:list" in r[1]])
        assert api.get_job(job.job_id, launcher=job._launcher).info()["cause"] == cause
        assert len([r for r in fake.requests if "entries:list" in r[1]]) == reads  # kept: the log is not read again


def test_an_unreadable_log_still_gives_a_cause(gcs, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    with FakeVertex() as fake:
        job, native = _failed_job(fake, gcs, tmp_path, lock_dir, "http://127.0.0.1:9")  # nothing listens there
        fake.set_state(native, "JOB_STATE_FAILED", error="The following quota metrics exceed quota limits: "
                       "aiplatform.googleapis.com/custom_model_training_nvidia_a100_gpus")
        cause = job.info()["cause"]
        assert cause["cause"] == "capacity_or_quota" and "custom_model_training_nvidia_a100_gpus" in cause["line"]
        assert cause["note"].startswith("the log could not be read")
        assert "triage" not in JobStore().get(job.job_id).extra
