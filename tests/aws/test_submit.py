"""The real boto3 call path: against moto's server on 127.0.0.1, and (for what moto lacks or fakes:
StopTrainingJob, CloudWatch Logs, ResourceInUse) with botocore's Stubber."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import InvalidInput
from cloudtune.launcher import JobRef
from tests.aws.conftest import SUFFIX, clients, settings, spec_from, write_data

from cloudtune.kit.retry import RetryPolicy
from cloudtune_aws.launcher import LOG_GROUP, AwsLauncher

boto3 = pytest.importorskip("boto3")
BUCKET = "moto-launch"


def _api(endpoint: str, path: str) -> bytes:
    with urllib.request.urlopen(endpoint + "/moto-api/recorder/" + path, data=b"" if path != "download-recording" else None, timeout=10) as r:
        return r.read()


def _recorded_creates(endpoint: str) -> list[dict[str, Any]]:
    out = []
    for line in _api(endpoint, "download-recording").decode().splitlines():
        entry = json.loads(line)
        target = {k.lower(): v for k, v in entry["headers"].items()}.get("x-amz-target", "")
        if target.endswith("CreateTrainingJob"):
            body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else entry["body"]
            out.append(json.loads(body))
    return out


def _spec(tmp_path: Path, name: str = "moto-job"):
    write_data(tmp_path)
    return spec_from({"name": name, "resources": {"accelerator": "L4:1"},
                      "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                      "train": {"model": "./model"}}, tmp_path)


def test_launch_against_moto(moto_server: str, tmp_path: Path, lock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = clients(moto_server, max_attempts=3)
    c["s3_client"].create_bucket(Bucket=BUCKET)  # a bucket of its own: the moto server is shared by the session
    launcher = AwsLauncher(**c, home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01), lock_dir=lock_dir)
    spec = _spec(tmp_path)
    plan = launcher.plan(spec, settings(bucket=BUCKET), suffix=SUFFIX)

    _api(moto_server, "reset-recording")
    _api(moto_server, "start-recording")
    try:
        ref = launcher.submit(plan)
    finally:
        _api(moto_server, "stop-recording")
    creates = _recorded_creates(moto_server)
    assert creates == [plan.request]  # the body SageMaker received is the dry run, exactly

    expected_bytes = sum(u.bytes for u in plan.uploads)
    assert launcher.last_uploaded_bytes == expected_bytes == ref.extra["uploaded_bytes"]
    assert ref.native_id.startswith("arn:aws:sagemaker:us-east-1:") and ref.native_id.endswith(f"training-job/{plan.job_name}")
    assert ref.console_url == f"https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/{plan.job_name}"
    assert ref.model_uri == plan.model_uri

    # every upload landed where the channels point
    s3 = c["s3_client"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    for ch in plan.request["InputDataConfig"]:
        prefix = ch["DataSource"]["S3DataSource"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
        assert any(k.startswith(prefix) for k in keys), prefix
    assert any(k.endswith("eval/part-1.jsonl") for k in keys)

    sm = c["sagemaker_client"]
    described = sm.describe_training_job(TrainingJobName=plan.job_name)
    assert described["HyperParameters"] == plan.request["HyperParameters"]
    assert plan.job_name in [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert launcher.status(ref).state == "succeeded"  # moto completes jobs at once

    # relaunch: same job, new suffix -> nothing uploaded again
    again = launcher.plan(_spec(tmp_path), settings(bucket=BUCKET), suffix="20260101-000001-beef")
    ref2 = launcher.submit(again)
    assert ref2.extra["uploaded_bytes"] == 0 and launcher.last_uploaded_bytes == 0
    # submitting the very same plan twice adopts the existing job (same name, same request)
    assert launcher.submit(again).native_id == ref2.native_id


def test_missing_bucket_is_a_clear_error(moto_server: str, tmp_path: Path, lock_dir: Path) -> None:
    c = clients(moto_server)
    launcher = AwsLauncher(**c, home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01), lock_dir=lock_dir)
    plan = launcher.plan(_spec(tmp_path), settings(bucket="no-such-bucket-here"), suffix=SUFFIX)
    with pytest.raises(InvalidInput, match="does not exist"):
        launcher.submit(plan)


# ------------------------------------------------------------------ Stubber: what moto lacks or fakes
def _stubbed(service: str):
    from botocore.stub import Stubber

    client = boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1").client(service)
    return client, Stubber(client)


REF = JobRef("aws", "job-1", "arn:aws:sagemaker:eu-west-1:123456789012:training-job/job-1",
             extra={"region": "eu-west-1", "job_name": "job-1"})


def test_cancel_stops_the_job() -> None:
    sm, stub = _stubbed("sagemaker")
    stub.add_response("stop_training_job", {}, {"TrainingJobName": "job-1"})
    stub.add_client_error("stop_training_job", "ValidationException",
                          "The job status is Completed; it cannot be stopped.", expected_params={"TrainingJobName": "job-1"})
    stub.add_client_error("stop_training_job", "AccessDeniedException", "no", http_status_code=403)
    with stub:
        launcher = AwsLauncher(sagemaker_client=sm, policy=RetryPolicy(base_s=0, cap_s=0))
        launcher.cancel(REF)
        launcher.cancel(REF)  # an ended job: not an error
        with pytest.raises(Exception, match="AccessDenied"):
            launcher.cancel(REF)
    stub.assert_no_pending_responses()


def _ts(seconds: int) -> int:
    return 1_700_000_000_000 + seconds * 1000


def test_logs_merge_streams_in_timestamp_order() -> None:
    logs, stub = _stubbed("logs")
    prefix = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": "job-1/"}
    stub.add_response("describe_log_streams", {"logStreams": [{"logStreamName": "job-1/algo-1-1700000000"}], "nextToken": "p2"}, prefix)
    stub.add_response("describe_log_streams", {"logStreams": [{"logStreamName": "job-1/algo-2-1700000000"}]}, {**prefix, "nextToken": "p2"})
    s1 = {"logGroupName": LOG_GROUP, "logStreamName": "job-1/algo-1-1700000000", "startFromHead": True}
    s2 = {"logGroupName": LOG_GROUP, "logStreamName": "job-1/algo-2-1700000000", "startFromHead": True}
    stub.add_response("get_log_events", {"events": [{"timestamp": _ts(1), "message": "a1"}, {"timestamp": _ts(4), "message": "a4"}],
                                         "nextForwardToken": "f/1"}, s1)
    stub.add_response("get_log_events", {"events": [{"timestamp": _ts(5), "message": "a5"}], "nextForwardToken": "f/2"}, {**s1, "nextToken": "f/1"})
    stub.add_response("get_log_events", {"events": [], "nextForwardToken": "f/2"}, {**s1, "nextToken": "f/2"})
    stub.add_response("get_log_events", {"events": [{"timestamp": _ts(2), "message": "b2"}, {"timestamp": _ts(3), "message": "b3"}],
                                         "nextForwardToken": "g/1"}, s2)
    stub.add_response("get_log_events", {"events": [], "nextForwardToken": "g/1"}, {**s2, "nextToken": "g/1"})
    with stub:
        lines = list(AwsLauncher(logs_client=logs, policy=RetryPolicy(base_s=0, cap_s=0)).logs(REF))
    assert lines == ["a1", "b2", "b3", "a4", "a5"]


def test_logs_follow_until_the_job_ends() -> None:
    logs, lstub = _stubbed("logs")
    sm, sstub = _stubbed("sagemaker")
    prefix = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": "job-1/"}
    s1 = {"logGroupName": LOG_GROUP, "logStreamName": "job-1/algo-1", "startFromHead": True}
    # poll 1: no log group yet (the job is starting)
    lstub.add_client_error("describe_log_streams", "ResourceNotFoundException", "The specified log group does not exist.", 400, expected_params=prefix)
    sstub.add_response("describe_training_job", _described("InProgress", "Training"), {"TrainingJobName": "job-1"})
    # poll 2: one line; the job then completes
    lstub.add_response("describe_log_streams", {"logStreams": [{"logStreamName": "job-1/algo-1"}]}, prefix)
    lstub.add_response("get_log_events", {"events": [{"timestamp": _ts(1), "message": "[cloudtune] step=10 loss=2.0\n"}], "nextForwardToken": "t1"}, s1)
    lstub.add_response("get_log_events", {"events": [], "nextForwardToken": "t1"}, {**s1, "nextToken": "t1"})
    sstub.add_response("describe_training_job", _described("Completed", "Completed"), {"TrainingJobName": "job-1"})
    # final drain
    lstub.add_response("describe_log_streams", {"logStreams": [{"logStreamName": "job-1/algo-1"}]}, prefix)
    lstub.add_response("get_log_events", {"events": [{"timestamp": _ts(2), "message": "done"}], "nextForwardToken": "t2"}, {**s1, "nextToken": "t1"})
    lstub.add_response("get_log_events", {"events": [], "nextForwardToken": "t2"}, {**s1, "nextToken": "t2"})
    with lstub, sstub:
        launcher = AwsLauncher(sagemaker_client=sm, logs_client=logs, policy=RetryPolicy(base_s=0, cap_s=0), poll_s=0)
        assert list(launcher.logs(REF, follow=True, max_polls=10)) == ["[cloudtune] step=10 loss=2.0", "done"]
    lstub.assert_no_pending_responses()
    sstub.assert_no_pending_responses()


def _described(status: str, secondary: str, **extra: Any) -> dict[str, Any]:
    now = dt.datetime(2026, 1, 1)
    return {
        "TrainingJobName": "job-1", "TrainingJobArn": REF.native_id, "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m"},
        "TrainingJobStatus": status, "SecondaryStatus": secondary, "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g6.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60}, "CreationTime": now,
        "SecondaryStatusTransitions": [{"Status": secondary, "StartTime": now, "StatusMessage": "msg"}], **extra,
    }


def test_status_surfaces_the_failure_reason() -> None:
    sm, stub = _stubbed("sagemaker")
    stub.add_response("describe_training_job", _described("Failed", "Failed", FailureReason="AlgorithmError: CUDA out of memory"),
                      {"TrainingJobName": "job-1"})
    with stub:
        st = AwsLauncher(sagemaker_client=sm).status(REF)
    assert st.state == "failed" and st.failure_reason == "AlgorithmError: CUDA out of memory" and "Failed" in st.detail


def test_resource_in_use_for_a_different_request_is_refused(tmp_path: Path) -> None:
    launcher = AwsLauncher(home=tmp_path / "home", policy=RetryPolicy(base_s=0, cap_s=0))
    plan = launcher.plan(_spec(tmp_path), settings(), suffix=SUFFIX)
    sm, stub = _stubbed("sagemaker")
    stub.add_client_error("create_training_job", "ResourceInUse", "Training job names must be unique", 400)
    other = _described("InProgress", "Training", TrainingJobName=plan.job_name, HyperParameters={"cloudtune_job": "{}"},
                       RoleArn=plan.request["RoleArn"])
    stub.add_response("describe_training_job", other, {"TrainingJobName": plan.job_name})
    with stub:
        with pytest.raises(InvalidInput, match="different SageMaker training job"):
            AwsLauncher(sagemaker_client=sm, policy=RetryPolicy(base_s=0, cap_s=0))._create(plan.request, "us-east-1")


def test_missing_boto3_names_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(InvalidInput) as err:
        AwsLauncher().status(REF)
    hint = str(err.value).split("To fix: ", 1)[1]
    assert hint.startswith("pip install -e ") and hint.rstrip("'").endswith("launchers/aws")  # works from a checkout


def test_spot_job_reports_the_saving_sagemaker_bills() -> None:
    """A managed-spot plan quotes the on-demand price as an upper bound; the finished job's status gives the saving
    from the billable and training seconds SageMaker reports."""
    sm, stub = _stubbed("sagemaker")
    stub.add_response("describe_training_job", _described("Completed", "Completed", EnableManagedSpotTraining=True,
                                                          TrainingTimeInSeconds=1000, BillableTimeInSeconds=320),
                      {"TrainingJobName": "job-1"})
    with stub:
        st = AwsLauncher(sagemaker_client=sm).status(REF)
    assert st.state == "succeeded" and "managed spot saving 68% (billed 320 s of 1000 s trained)" in st.detail


def test_spot_plan_is_an_upper_bound_and_the_cheapest_type_is_named(tmp_path: Path) -> None:
    from cloudtune.kit.cost import UPPER_BOUND

    write_data(tmp_path)
    spec = spec_from({"name": "spot", "resources": {"accelerator": "L4:1", "spot": True},
                      "inputs": {"train": "s3://b/train.jsonl"}, "train": {"model": "gpt2"}}, tmp_path)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    assert plan.instance_type == "ml.g6.xlarge" and plan.estimated_usd_per_hour == 1.006
    assert plan.cost_basis == UPPER_BOUND
    assert any(n.startswith("ml.g6.xlarge ($1.01/h) is the cheapest of 5 machine types with L4:1") for n in plan.notes)
