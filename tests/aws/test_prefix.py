"""s3:// inputs are S3Prefix channels: `s3://b/datasets/train` would also match `datasets/train-old/...`.

The plan (offline) says so in its notes; submit looks each remote input up once, before any upload, and sends a
folder with its trailing '/', an object alone, and refuses what is missing or ambiguous -- against moto's server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudtune.errors import InvalidInput
from tests.aws.conftest import SUFFIX, clients, settings, spec_from
from tests.aws.test_submit import _api, _recorded_creates

from cloudtune.kit.retry import RetryPolicy
from cloudtune_aws.launcher import AwsLauncher

pytest.importorskip("boto3")
BUCKET = "prefix-data"
CASE = Path("/work/shared/cases/11-s3-prefix-no-slash")
KEYS = [
    "datasets/train/part-0.jsonl", "datasets/train-old/part-0.jsonl", "datasets/train.bak",   # a folder + siblings
    "datasets/eval/part-0.jsonl",
    "files/solo.jsonl", "files/file.jsonl", "files/file.jsonl.bak",                            # objects
    "mixed", "mixed/part-0.jsonl",                                                             # object and folder
    "near/thing-here.jsonl",
    "console/", "console/empty/",                                                              # folder markers only
    "marked/", "marked/part-0.jsonl",                                                          # a marker and a file
]


@pytest.fixture(scope="module")
def bucket(moto_server: str) -> str:
    s3 = clients(moto_server)["s3_client"]
    s3.create_bucket(Bucket=BUCKET)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"text": "x"}\n')
    return moto_server


def _launch(endpoint: str, tmp_path: Path, inputs: dict[str, str]):
    spec = spec_from({"name": "prefix", "inputs": inputs, "command": "python train.py", "code": ".",
                      "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:1"}, tmp_path)
    (tmp_path / "train.py").write_text("print(1)\n")
    launcher = AwsLauncher(**clients(endpoint), home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01))
    from cloudtune.bundle import build_bundle

    plan = launcher.plan(spec, settings(bucket=BUCKET), suffix=SUFFIX, bundle=build_bundle(tmp_path))
    return launcher, plan


def _channels(request: dict) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}


def test_plan_notes_a_prefix_without_slash(tmp_path: Path) -> None:
    _, plan = _launch("http://127.0.0.1:9", tmp_path, {"train": f"s3://{BUCKET}/datasets/train",
                                                       "eval": f"s3://{BUCKET}/datasets/eval/"})
    notes = [n for n in plan.notes if "trailing '/'" in n]
    assert len(notes) == 1 and "input train" in notes[0] and "siblings" in notes[0]
    assert _channels(plan.request)["train"] == f"s3://{BUCKET}/datasets/train"  # the dry run shows what was written


def test_the_shared_case_dry_run_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys

    if not CASE.is_dir():
        pytest.skip("the shared case is not on this machine")
    work = tmp_path / "case"
    shutil.copytree(CASE, work)
    out = subprocess.run([sys.executable, "-m", "cloudtune.cli", "launch", "job.yaml", "--provider", "aws", "--dry-run"],
                         cwd=work, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "CLOUDTUNE_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert "note: input train: s3://example-bucket/datasets/train has no trailing '/'" in out.stdout
    assert "input eval" not in out.stdout


@pytest.mark.parametrize("given,sent", [
    ("datasets/train", "datasets/train/"),   # a folder written without '/': never train-old/ or train.bak
    ("datasets/eval/", "datasets/eval/"),    # a folder, as written
    ("files/solo.jsonl", "files/solo.jsonl"),  # an object alone
    ("marked", "marked/"),                   # a console folder (its marker) holding a file
])
def test_submit_sends_what_the_user_meant(bucket: str, tmp_path: Path, given: str, sent: str) -> None:
    launcher, plan = _launch(bucket, tmp_path, {"train": f"s3://{BUCKET}/{given}"})
    _api(bucket, "reset-recording")
    _api(bucket, "start-recording")
    try:
        launcher.submit(plan)
    finally:
        _api(bucket, "stop-recording")
    [create] = _recorded_creates(bucket)
    assert _channels(create)["train"] == f"s3://{BUCKET}/{sent}"
    others = {k: v for k, v in _channels(create).items() if k != "train"}
    assert others == {k: v for k, v in _channels(plan.request).items() if k != "train"}  # nothing else changed


@pytest.mark.parametrize("given,message", [
    ("files/file.jsonl", "also matches s3://prefix-data/files/file.jsonl.bak"),  # an object with a sibling
    ("mixed", "both an object and a folder"),
    ("datasets/nothing", "no such object or folder"),
    ("near/thing", "nearest key is s3://prefix-data/near/thing-here.jsonl"),
    ("datasets/empty/", "no object under this folder"),
    ("console/", "only empty folders under this folder"),        # made in the console, never filled
    ("console", "holds only empty folders"),
    ("datasets/train*", "no such object or folder"),             # no wildcards in S3
    ("/datasets/train", "no such object or folder"),             # s3://bucket//datasets/train: a key starting '/'
])
def test_submit_refuses_before_any_upload(bucket: str, tmp_path: Path, given: str, message: str) -> None:
    launcher, plan = _launch(bucket, tmp_path, {"train": f"s3://{BUCKET}/{given}"})
    s3 = clients(bucket)["s3_client"]
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    sm = clients(bucket)["sagemaker_client"]
    jobs_before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    with pytest.raises(InvalidInput) as exc:
        launcher.submit(plan)
    assert message in exc.value.message and f"s3://{BUCKET}/{given}" in exc.value.message and exc.value.fix
    after = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert after == before  # nothing uploaded
    assert sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"] == jobs_before  # nothing created
