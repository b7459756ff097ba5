"""SageMaker jobs' models: `cloudtune download` against moto's S3 on 127.0.0.1 (model.tar.gz unpacked safely,
checkpoints, ETag checked), and `train.model: job:<JOB>` in a SageMaker plan (the S3 URI as the model channel)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from cloudtune import api
from cloudtune.errors import InvalidInput
from cloudtune.jobmodel import resolve_job_model
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobRecord, JobStore
from tests.aws.conftest import REGION, SUFFIX, clients, settings, spec_from, write_data
from tests.cloudfaults import cli

from cloudtune_aws.launcher import AwsLauncher, S3Store

pytest.importorskip("boto3")
BUCKET = "download-test"
FAST = RetryPolicy(base_s=0.01, cap_s=0.01)
MODEL = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": bytes(range(256)) * 40,
         "tokenizer.json": b"{}", "adapter/adapter_config.json": b"{}"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def s3(moto_server: str) -> dict[str, Any]:
    c = clients(moto_server)
    c["s3_client"].create_bucket(Bucket=BUCKET)
    return c


def tarball(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def sagemaker_job(s3: dict[str, Any], name: str, archive: bytes, *, state: str = "succeeded",
                  checkpoints: dict[str, bytes] | None = None) -> str:
    """A SageMaker job as it is left in S3 and the job store: <output>/<job>/output/model.tar.gz and the
    checkpoints under <output>/checkpoints/<job>/ (the location derived, as for a job recorded before submit kept it)."""
    client = s3["s3_client"]
    model_uri = f"s3://{BUCKET}/output/{name}/output/model.tar.gz"
    client.put_object(Bucket=BUCKET, Key=f"output/{name}/output/model.tar.gz", Body=archive)
    for key, data in (checkpoints or {}).items():
        client.put_object(Bucket=BUCKET, Key=f"output/checkpoints/{name}/{key}", Body=data)
    now = time.time()
    JobStore().add(JobRecord(job_id=name, provider="aws", name="sm", state=state, created_at=now, updated_at=now,
                             native_id=f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}", model_uri=model_uri,
                             extra={"region": REGION, "job_name": name, "failure_reason": None}))
    return name


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_download_unpacks_the_model_and_fetches_checkpoints(s3: dict[str, Any], home: Path, tmp_path: Path) -> None:
    job = sagemaker_job(s3, "sm-20260101-000000-abcd", tarball(MODEL),
                        checkpoints={"checkpoint-2/model.safetensors": b"c2", "checkpoint-4/model.safetensors": b"c4"})
    target = api.download(job, tmp_path / "out", checkpoints=True, launcher=AwsLauncher(**s3, policy=FAST))
    assert files(target) == {**MODEL, "checkpoints/checkpoint-2/model.safetensors": b"c2",
                             "checkpoints/checkpoint-4/model.safetensors": b"c4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]  # the archive and temp dirs are gone


def test_cli_download_against_moto(s3: dict[str, Any], moto_server: str, home: Path, tmp_path: Path) -> None:
    """The real CLI: clients made from the environment (AWS_ENDPOINT_URL), the default DIR, a progress line."""
    job = sagemaker_job(s3, "smcli-20260101-000000-abcd", tarball(MODEL))
    env = {"CLOUDTUNE_HOME": str(home), "HOME": str(tmp_path), "AWS_ENDPOINT_URL": moto_server,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
    run = cli("download", "smcli", cwd=tmp_path, env=env)
    assert run.rc == 0, run.err
    assert f"downloading s3://{BUCKET}/output/{job}/output/model.tar.gz" in run.err
    assert files(tmp_path / f"{job}-model") == MODEL
    again = cli("download", "smcli", cwd=tmp_path, env=env)
    assert again.rc == 2 and "exists and is not empty" in again.err and "--force" in again.err


@pytest.mark.parametrize("member, needle", [("../../escape.txt", "outside the target directory"),
                                            ("/tmp/escape.txt", "outside the target directory"),
                                            ("link", "is a link")])
def test_an_archive_that_escapes_is_refused(s3: dict[str, Any], home: Path, tmp_path: Path, member: str,
                                            needle: str) -> None:
    info = tarfile.TarInfo(member)
    if member == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    job = sagemaker_job(s3, f"evil{hashlib.md5(member.encode()).hexdigest()[:6]}-20260101-000000-abcd",
                        tarball(MODEL, [info]))
    with pytest.raises(InvalidInput, match=needle):
        api.download(job, tmp_path / "out", launcher=AwsLauncher(**s3, policy=FAST))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing at DIR, no temp dir left


def test_an_unfinished_job_is_refused_before_any_call(home: Path, tmp_path: Path) -> None:
    now = time.time()
    JobStore().add(JobRecord(job_id="gone-1", provider="aws", name="gone", state="failed", created_at=now,
                             updated_at=now, native_id="arn:aws:sagemaker:us-east-1:1:training-job/gone-1",
                             model_uri="s3://b/o/gone-1/output/model.tar.gz", extra={"failure_reason": "OOM"}))
    with pytest.raises(InvalidInput, match="is failed, not succeeded"):
        api.download("gone-1", tmp_path / "out", launcher=AwsLauncher(policy=FAST))  # no client: nothing was asked


def test_the_s3_store_states_the_etag_as_md5_of_single_part_objects(s3: dict[str, Any], tmp_path: Path) -> None:
    store = S3Store(s3["s3_client"])
    data = b"x" * 5000
    s3["s3_client"].put_object(Bucket=BUCKET, Key="etag/one", Body=data)
    seen: list[int] = []
    assert store.get(BUCKET, "etag/one", tmp_path / "one", seen.append) == hashlib.md5(data).hexdigest()
    assert sum(seen) == len(data) and (tmp_path / "one").read_bytes() == data
    assert ("etag/one", len(data)) in store.list_objects(BUCKET, "etag/")


def test_listing_reads_every_page(s3: dict[str, Any]) -> None:
    for i in range(1005):  # S3 pages at 1000 keys
        s3["s3_client"].put_object(Bucket=BUCKET, Key=f"many/{i:05d}", Body=b"")
    listed = S3Store(s3["s3_client"]).list_objects(BUCKET, "many/")
    assert len(listed) == 1005 and listed[-1] == ("many/01004", 0)


# ------------------------------------------------------------------ train.model: job:<JOB> in a SageMaker plan
def _record(job_id: str, provider: str, model_uri: str, plan: dict[str, Any] | None = None) -> None:
    now = time.time()
    JobStore().add(JobRecord(job_id=job_id, provider=provider, name=job_id, state="succeeded", created_at=now,
                             updated_at=now, native_id=job_id, model_uri=model_uri, plan=plan))


def _channels(plan: Any) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in plan.request["InputDataConfig"]}


def test_a_sagemaker_model_is_the_model_channel(home: Path, tmp_path: Path) -> None:
    uri = "s3://cloudtune-test/output/first-1/output/model.tar.gz"
    _record("first-1", "aws", uri)
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:first"}}, tmp_path)
    spec = resolve_job_model(spec, "aws", JobStore.lookup)  # as cloudtune.api does before planning
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert _channels(plan)["model"] == uri
    assert plan.spec["train"]["model"] == "model" and plan.spec["inputs"]["model"] == uri
    import json

    job = json.loads(plan.request["HyperParameters"]["cloudtune_job"])
    assert job["train"]["model"] == "model" and job["inputs"]["model"] == "/opt/ml/input/data/model"


def test_a_lora_job_on_s3_brings_its_base_channel(home: Path, tmp_path: Path) -> None:
    adapter, base = "s3://cloudtune-test/output/lora-1/output/model.tar.gz", "s3://models/base/"
    _record("lora-1", "aws", adapter, {"spec": {"inputs": {"model": base}, "train": {"model": "model", "lora": {"r": 8}}}})
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:lora-1"}}, tmp_path)
    spec = resolve_job_model(spec, "aws", JobStore.lookup)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert _channels(plan)["model"] == adapter and _channels(plan)["base_model"] == base
    assert plan.spec["train"]["base_model"] == "base_model"


def test_another_clouds_model_is_refused_with_the_download_fix(home: Path, tmp_path: Path) -> None:
    _record("vx-1", "gcp", "gs://bucket/ct/output/vx-1/model/")
    write_data(tmp_path)
    spec = spec_from({"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": "job:vx-1"}}, tmp_path)
    with pytest.raises(InvalidInput) as err:
        resolve_job_model(spec, "aws", JobStore.lookup)
    text = str(err.value)
    assert text.startswith("train.model: job:vx-1: the model of job vx-1 is at gs://bucket/ct/output/vx-1/model/")
    assert "To fix: download it first: `cloudtune download vx-1 DIR`, then set train.model: DIR" in text


def test_cli_dry_run_shows_the_model_channel(home: Path, tmp_path: Path) -> None:
    uri = "s3://cloudtune-test/output/first-1/output/model.tar.gz"
    _record("first-1", "aws", uri)
    write_data(tmp_path)
    (tmp_path / "job.yaml").write_text(
        "name: second\nimage: 123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:1\n"
        "inputs: {train: data/train.jsonl}\ntrain: {model: 'job:first'}\n"
        "providers:\n  aws: {region: us-east-1, role: 'arn:aws:iam::123456789012:role/SageMakerExecution', "
        "bucket: cloudtune-test}\n")
    run = cli("launch", "job.yaml", "--provider", "aws", "--dry-run", cwd=tmp_path,
              env={"CLOUDTUNE_HOME": str(home), "HOME": str(tmp_path)})
    assert run.rc == 0, run.err
    assert '"ChannelName": "model"' in run.out and f'"S3Uri": "{uri}"' in run.out
