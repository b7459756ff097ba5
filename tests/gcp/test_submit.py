"""The real SDK call path against loopback fakes: the Vertex REST fake (JobServiceClient over REST, Cloud Logging
over HTTP) and gcp-storage-emulator for GCS. Launch, relaunch, status, logs, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.kit.retry import RetryPolicy
from tests.gcp.conftest import BUCKET, SUFFIX, job_client, logging_client, settings, spec_from, write_data
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")
FAST = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, deadline_s=10)


def _launcher(fake: FakeVertex, gcs, home: Path, lock_dir: Path) -> GcpLauncher:
    return GcpLauncher(job_client(fake.url), gcs, logging_client(fake.url), policy=FAST, poll_s=0.01, home=home,
                       lock_dir=lock_dir)


def _spec(tmp_path: Path, suffix_data: str = ""):
    write_data(tmp_path)
    return spec_from({"name": "gcp-e2e", "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                      "command": "python train.py", "code": "src"}, tmp_path)


def test_launch_status_logs_cancel_and_relaunch_uploads_nothing(gcs, tmp_path: Path, lock_dir: Path) -> None:
    from cloudtune.bundle import build_bundle

    spec = _spec(tmp_path)
    with FakeVertex() as fake:
        launcher = _launcher(fake, gcs, tmp_path / "home", lock_dir)
        plan = launcher.plan(spec, settings(), suffix=SUFFIX, bundle=build_bundle(tmp_path / "src"))
        ref = launcher.submit(plan)
        first = launcher.last_uploaded_bytes
        assert first == sum(u.bytes for u in plan.uploads) > 0
        # everything the plan named is in the bucket, under its content key
        names = {b.name for b in gcs.list_blobs(BUCKET)}
        assert any(n.startswith("ct/bundles/") and n.endswith(".tar.gz") for n in names)
        assert any("/eval/part-0.jsonl" in n for n in names) and any(n.endswith("/train.jsonl") for n in names)
        # the body Vertex received is the planned one
        [(_, path, body)] = [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/customJobs")]
        assert path == f"/v1/{plan.request['parent']}/customJobs"
        assert body["labels"] == plan.request["customJob"]["labels"]
        assert body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"] == \
            plan.request["customJob"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        assert ref.native_id.startswith(plan.request["parent"] + "/customJobs/")
        assert ref.console_url and ref.model_uri == plan.model_uri

        assert launcher.status(ref).state == "pending"
        job_id = ref.native_id.rsplit("/", 1)[-1]
        fake.set_state(ref.native_id, "JOB_STATE_RUNNING")
        fake.log(job_id, "workerpool1-0", "worker says hi", 2)
        fake.log(job_id, "workerpool0-0", "chief says hi", 1)
        assert launcher.status(ref).state == "running"
        assert list(launcher.logs(ref)) == ["chief says hi", "worker says hi"]  # all replicas, in time order

        launcher.cancel(ref)
        st = launcher.status(ref)
        assert st.state == "cancelled" and st.native == "JOB_STATE_CANCELLED"
        launcher.cancel(ref)  # cancelling an ended job is not an error

        # a relaunch of the same data uploads nothing
        again = _launcher(fake, gcs, tmp_path / "home", lock_dir).plan(spec, settings(), suffix="20260101-000001-abcd",
                                                             bundle=build_bundle(tmp_path / "src"))
        relauncher = _launcher(fake, gcs, tmp_path / "home", lock_dir)
        relauncher.submit(again)
        assert relauncher.last_uploaded_bytes == 0
        assert len(fake.jobs) == 2


def test_failed_job_surfaces_vertex_error_and_follow_ends(gcs, tmp_path: Path, lock_dir: Path) -> None:
    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')  # submit looks it up
    spec = spec_from({"name": "gcp-fail", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"}, "train": {"model": "gpt2"}}, tmp_path)
    with FakeVertex() as fake:
        launcher = _launcher(fake, gcs, tmp_path / "home", lock_dir)
        ref = launcher.submit(launcher.plan(spec, settings(), suffix=SUFFIX))
        job_id = ref.native_id.rsplit("/", 1)[-1]
        fake.log(job_id, "workerpool0-0", "[cloudtune] data error", 1)
        fake.set_state(ref.native_id, "JOB_STATE_FAILED", error="The replica workerpool0-0 exited with a non-zero status of 2.")
        st = launcher.status(ref)
        assert st.state == "failed" and "non-zero status of 2" in (st.failure_reason or "")
        assert list(launcher.logs(ref, follow=True, max_polls=5)) == ["[cloudtune] data error"]


def test_unreachable_endpoint_is_one_line_after_bounded_retries(gcs, tmp_path: Path, lock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtune.kit.retry import CloudError

    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')  # submit looks it up
    spec = spec_from({"name": "gcp-down", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"}, "train": {"model": "gpt2"}}, tmp_path)
    launcher = GcpLauncher(job_client("http://127.0.0.1:9"), gcs, None, policy=FAST, home=tmp_path / "home",
                           lock_dir=lock_dir)
    with pytest.raises(CloudError) as info:
        launcher.submit(launcher.plan(spec, settings(), suffix=SUFFIX))
    assert str(info.value).startswith("Vertex AI: cannot reach the endpoint") and "To fix:" in str(info.value)
    assert "retrying" in capsys.readouterr().err
