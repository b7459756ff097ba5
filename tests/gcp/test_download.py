"""Vertex AI jobs' models: `cloudtune download` against gcp-storage-emulator on 127.0.0.1 (AIP_MODEL_DIR and
AIP_CHECKPOINT_DIR fetched and checked), and `train.model: job:<JOB>` in a Vertex AI plan (the gs:// model dir as the
model input)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

from cloudtune import api
from cloudtune.errors import InvalidInput
from cloudtune.jobmodel import resolve_job_model
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobRecord, JobStore
from tests.gcp.conftest import BUCKET, PROJECT, REGION, SUFFIX, settings, spec_from, write_data

from cloudtune_gcp.launcher import GcpLauncher, GcsStore

pytest.importorskip("google.cloud.storage")
FAST = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05, deadline_s=10)
MODEL = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": bytes(range(256)) * 40,
         "tokenizer.json": b"{}", "adapter/adapter_config.json": b"{}"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def vertex_job(gcs: Any, name: str, *, checkpoints: dict[str, bytes] | None = None, record_checkpoints: bool = True) -> str:
    """A Vertex AI job as it is left in Cloud Storage (<base>/model/..., <base>/checkpoints/...) and the job store."""
    base = f"ct/output/{name}"
    bucket = gcs.bucket(BUCKET)
    for rel, data in MODEL.items():
        bucket.blob(f"{base}/model/{rel}").upload_from_string(data)
    bucket.blob(f"{base}/model-old/config.json").upload_from_string(b"not this one")
    for rel, data in (checkpoints or {}).items():
        bucket.blob(f"{base}/checkpoints/{rel}").upload_from_string(data)
    extra: dict[str, Any] = {"project": PROJECT, "region": REGION, "job_name": name}
    if record_checkpoints:
        extra["checkpoint_uri"] = f"gs://{BUCKET}/{base}/checkpoints/"
    now = time.time()
    JobStore().add(JobRecord(job_id=name, provider="gcp", name="vx", state="succeeded", created_at=now, updated_at=now,
                             native_id=f"projects/{PROJECT}/locations/{REGION}/customJobs/123",
                             model_uri=f"gs://{BUCKET}/{base}/model/", extra=extra))
    return name


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("recorded", [True, False])
def test_download_fetches_the_model_dir_and_checkpoints(gcs: Any, home: Path, tmp_path: Path, recorded: bool) -> None:
    job = vertex_job(gcs, f"vx{int(recorded)}-20260101-000000-abcd", checkpoints={"checkpoint-2/w.bin": b"c2"},
                     record_checkpoints=recorded)  # an older record: the checkpoint dir is derived
    launcher = GcpLauncher(storage_client=gcs, policy=FAST)
    target = api.download(job, tmp_path / "out", checkpoints=True, launcher=launcher)
    assert files(target) == {**MODEL, "checkpoints/checkpoint-2/w.bin": b"c2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]


def test_a_job_that_wrote_no_model_is_one_error(gcs: Any, home: Path, tmp_path: Path) -> None:
    now = time.time()
    JobStore().add(JobRecord(job_id="empty-1", provider="gcp", name="e", state="succeeded", created_at=now,
                             updated_at=now, native_id=f"projects/{PROJECT}/locations/{REGION}/customJobs/9",
                             model_uri=f"gs://{BUCKET}/ct/output/empty-1/model/", extra={"project": PROJECT}))
    with pytest.raises(InvalidInput, match=f"nothing is stored under gs://{BUCKET}/ct/output/empty-1/model/"):
        api.download("empty-1", tmp_path / "out", launcher=GcpLauncher(storage_client=gcs, policy=FAST))
    assert not (tmp_path / "out").exists()


def test_the_gcs_store_lists_sizes_and_checks_what_it_fetches(gcs: Any, tmp_path: Path) -> None:
    from cloudtune.kit.download import download_prefix

    store = GcsStore(gcs)
    gcs.bucket(BUCKET).blob("sizes/a.bin").upload_from_string(b"abc")
    gcs.bucket(BUCKET).blob("sizes/d/b.bin").upload_from_string(b"")
    assert store.list_objects(BUCKET, "sizes/") == [("sizes/a.bin", 3), ("sizes/d/b.bin", 0)]
    assert store.get(BUCKET, "sizes/a.bin", tmp_path / "one", None) == hashlib.md5(b"abc").hexdigest()  # X-Goog-Hash
    calls: list[str] = []

    def call(fn: Any, *args: Any, what: str = "") -> Any:
        calls.append(what)
        return fn(*args)

    assert download_prefix(store, f"gs://{BUCKET}/sizes", tmp_path / "out", call) == 3
    assert files(tmp_path / "out") == {"a.bin": b"abc", "d/b.bin": b""}
    assert calls[0] == f"list gs://{BUCKET}/sizes" and f"download gs://{BUCKET}/sizes/a.bin" in calls


# ------------------------------------------------------------------ train.model: job:<JOB> in a Vertex AI plan
def _record(job_id: str, provider: str, model_uri: str) -> None:
    now = time.time()
    JobStore().add(JobRecord(job_id=job_id, provider=provider, name=job_id, state="succeeded", created_at=now,
                             updated_at=now, native_id=job_id, model_uri=model_uri))


def test_a_vertex_model_is_the_model_input(home: Path, tmp_path: Path) -> None:
    import json

    uri = f"gs://{BUCKET}/ct/output/first-1/model/"
    _record("first-1", "gcp", uri)
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:first-1"}}, tmp_path)
    spec = resolve_job_model(spec, "gcp", JobStore.lookup)  # as cloudtune.api does before planning
    plan = GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert plan.spec["inputs"]["model"] == uri and plan.spec["train"]["model"] == "model"
    args = plan.request["customJob"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    job = json.loads(args[args.index("--job-json") + 1])
    assert job["inputs"]["model"] == uri and job["train"]["model"] == "model"
    assert not any(u.destination.startswith(uri) for u in plan.uploads)  # read where it is, never copied


def test_a_sagemaker_model_is_refused_on_vertex(home: Path, tmp_path: Path) -> None:
    _record("sm-1", "aws", "s3://b/out/sm-1/output/model.tar.gz")
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:sm-1"}}, tmp_path)
    with pytest.raises(InvalidInput, match=r"a gcp job reads gs:// URIs only\nTo fix: download it first: "
                                           r"`cloudtune download sm-1 DIR`, then set train.model: DIR"):
        resolve_job_model(spec, "gcp", JobStore.lookup)


def test_a_local_jobs_model_is_uploaded(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "home/jobs/loc-1/model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    (model / "model.safetensors").write_bytes(placeholder_weights())
    (model / "tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)
    _record("loc-1", "local", str(model))
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:loc-1"}}, tmp_path)
    spec = resolve_job_model(spec, "gcp", JobStore.lookup)
    plan = GcpLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    [up] = [u for u in plan.uploads if u.source == str(model)]
    assert up.destination.startswith(f"gs://{BUCKET}/ct/inputs/") and up.destination.endswith("/model/")
