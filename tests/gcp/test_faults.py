"""Launches through a faulty loopback proxy in front of the Vertex fake: 500s, 503s, dropped connections before
the request reaches the service, and creates whose answer is lost after the job was made. Every launch must
end with exactly one job: Vertex assigns job ids itself, so a retry adopts the job by its launch label."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cloudtune.kit.retry import RetryPolicy
from tests.cloudfaults import FaultyProxy
from tests.gcp.conftest import BUCKET, job_client, settings, spec_from
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")


def _is_create(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/customJobs")


def test_faulty_network_gives_exactly_one_job_per_launch(gcs, tmp_path: Path, lock_dir: Path) -> None:
    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')  # submit looks it up
    spec = spec_from({"name": "faulty", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"}, "train": {"model": "gpt2"}}, tmp_path)
    policy = RetryPolicy(max_attempts=20, base_s=0.002, cap_s=0.02, deadline_s=30)
    n = 10
    with FakeVertex() as fake, FaultyProxy(fake.url, rate=0.3, seed=7, is_create=_is_create) as proxy:
        launches = []
        for i in range(n):
            launcher = GcpLauncher(job_client(proxy.url), gcs, None, policy=policy, home=tmp_path / "home",
                                   lock_dir=lock_dir)
            ref = launcher.submit(launcher.plan(spec, settings(), suffix=f"20260101-0000{i:02d}-abcd"))
            launches.append((ref, launcher))
        per_launch = Counter(j["labels"]["cloudtune-launch"] for j in fake.jobs.values())
        assert len(fake.jobs) == n and set(per_launch.values()) == {1}, per_launch
        assert {ref.native_id for ref, _ in launches} == set(fake.jobs)  # each launch holds the job it made
        assert proxy.lost_creates >= 2 and sum(proxy.faults.values()) >= 5, (proxy.faults, proxy.lost_creates)
