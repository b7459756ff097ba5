"""`--resume JOB` on the Vertex AI fake (issue 10): Vertex derives AIP_CHECKPOINT_DIR from baseOutputDirectory, so
the new custom job writes under the stopped job's output directory, where the runtime resumes from the newest
complete checkpoint; the store links the two."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobStore
from tests.gcp.conftest import job_client
from tests.gcp.fake_vertex import FakeVertex
from tests.gcp.test_cli_errors import _job

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")


def test_resume_points_the_new_job_at_the_stopped_jobs_output(gcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct"))
    spec = _job(tmp_path)
    with FakeVertex() as vertex:
        launcher = GcpLauncher(job_client(vertex.url), gcs, policy=RetryPolicy(max_attempts=2, base_s=0.01, deadline_s=2),
                               home=tmp_path / "home")
        first = api.launch(spec, provider="gcp", launcher=launcher)
        vertex.set_state(first.record.native_id, "JOB_STATE_CANCELLED")
        assert first.status() == "cancelled"
        again = api.launch(spec, provider="gcp", launcher=launcher, resume=first.job_id)
        bodies = {j["name"]: j for j in vertex.jobs.values()}
        base = bodies[again.record.native_id]["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    assert base.rstrip("/") + "/checkpoints/" == first.record.extra["checkpoint_uri"]
    assert again.record.extra["checkpoint_uri"] == first.record.extra["checkpoint_uri"]
    assert JobStore().get(again.job_id).extra["resumed_from"] == first.job_id
    assert JobStore().get(first.job_id).extra["resumed_by"] == again.job_id
