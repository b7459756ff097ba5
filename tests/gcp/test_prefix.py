"""gs:// inputs reach a Vertex AI job through the /gcs mount (a path, not a key prefix): submit looks each one up
once, before any upload, and refuses a missing or ambiguous input instead of failing the job after it started.
Against gcp-storage-emulator and the loopback Vertex fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.errors import InvalidInput
from cloudtune.kit.retry import RetryPolicy
from tests.gcp.conftest import BUCKET, SUFFIX, job_client, settings, spec_from
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")
FAST = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02, deadline_s=5)
KEYS = ["datasets/train/part-0.jsonl", "datasets/train-old/part-0.jsonl", "files/file.jsonl", "files/file.jsonl.bak",
        "mixed", "mixed/part-0.jsonl"]


def _put(gcs) -> None:
    for key in KEYS:
        gcs.bucket(BUCKET).blob(key).upload_from_string(b'{"text": "x"}\n')


def _submit(gcs, fake: FakeVertex, tmp_path: Path, uri: str):
    spec = spec_from({"name": "gcs-input", "inputs": {"train": uri}, "train": {"model": "gpt2"},
                      "image": "us-docker.pkg.dev/ml-proj/cloudtune/cloudtune-gpu:1"}, tmp_path)
    launcher = GcpLauncher(job_client(fake.url), gcs, None, policy=FAST, home=tmp_path / "home")
    return launcher.submit(launcher.plan(spec, settings(), suffix=SUFFIX))


@pytest.mark.parametrize("key", ["datasets/train", "datasets/train/", "files/file.jsonl"])
def test_existing_inputs_are_sent_as_written(gcs, tmp_path: Path, key: str) -> None:
    _put(gcs)
    with FakeVertex() as fake:
        _submit(gcs, fake, tmp_path, f"gs://{BUCKET}/{key}")
        assert len(fake.jobs) == 1


@pytest.mark.parametrize("key,message", [
    ("datasets/nothing", "no such object or folder"),
    ("datasets/tra", "nearest key is gs://cloudtune-test/datasets/train"),
    ("mixed", "both an object and a folder"),
    ("datasets/empty/", "no object under this folder"),
])
def test_missing_or_ambiguous_inputs_are_refused_before_anything(gcs, tmp_path: Path, key: str, message: str) -> None:
    _put(gcs)
    before = {b.name for b in gcs.list_blobs(BUCKET)}
    with FakeVertex() as fake:
        with pytest.raises(InvalidInput) as exc:
            _submit(gcs, fake, tmp_path, f"gs://{BUCKET}/{key}")
        assert fake.jobs == {}
    assert message in exc.value.message and exc.value.fix
    assert {b.name for b in gcs.list_blobs(BUCKET)} == before  # nothing uploaded


def test_a_missing_bucket_is_a_configuration_error(gcs, tmp_path: Path) -> None:
    from cloudtune.kit.retry import CloudConfigError

    with FakeVertex() as fake:
        with pytest.raises(CloudConfigError) as exc:
            _submit(gcs, fake, tmp_path, "gs://no-such-bucket-here/train.jsonl")
        assert fake.jobs == {}
    assert "no-such-bucket-here" in str(exc.value) and exc.value.exit_code == 2


def test_a_missing_staging_bucket_is_a_configuration_error(gcs, tmp_path: Path) -> None:
    """providers.gcp.bucket names no bucket: the first upload says so (not "check the job id")."""
    from cloudtune.kit.retry import CloudConfigError

    (tmp_path / "data.jsonl").write_text('{"text": "x"}\n')
    spec = spec_from({"name": "gcs-input", "inputs": {"train": "data.jsonl"}, "train": {"model": "gpt2"},
                      "image": "us-docker.pkg.dev/ml-proj/cloudtune/cloudtune-gpu:1"}, tmp_path)
    with FakeVertex() as fake:
        launcher = GcpLauncher(job_client(fake.url), gcs, None, policy=FAST, home=tmp_path / "home")
        with pytest.raises(CloudConfigError) as exc:
            launcher.submit(launcher.plan(spec, settings(bucket="gs://no-such-staging-bucket/ct"), suffix=SUFFIX))
        assert fake.jobs == {}
    assert str(exc.value).startswith("Cloud Storage: ") and "no-such-staging-bucket" in str(exc.value)
    assert "providers.gcp.bucket" in (exc.value.fix or "")
