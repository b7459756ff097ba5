"""Launches that are never lost (issue 19 point 3), against moto through a proxy that loses create answers:

- a CLI killed while its CreateTrainingJob is in flight (the job was made, the answer never came) leaves a job that
  `cloudtune list` shows and `cloudtune cancel` stops: the launch was recorded before the create call;
- a create whose answer is lost and which lands after the client gave up says "the job may have been created:
  cloudtune status NAME"; `status` then finds the job by its name, and a relaunch of the same spec adopts it
  instead of creating a second paid job;
- a launch whose create never landed is shown as failed ("never created") once its process has ended.

moto lacks StopTrainingJob (the proxy answers it and records it) and never advances a job's state (the test sets
the job InProgress in moto's backend, which runs in this process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.conftest import REGION, ROLE, clients, write_data
from tests.cloudfaults import CreateStall, cli

pytest.importorskip("boto3")
BUCKET = "lost-launch"


def _is_create(method: str, path: str, headers: dict[str, str]) -> bool:
    return headers.get("X-Amz-Target", "").endswith("CreateTrainingJob")


def _stop(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
    return (200, b"{}") if headers.get("X-Amz-Target", "").endswith("StopTrainingJob") else None


def _spec(tmp_path: Path) -> dict:
    write_data(tmp_path)
    return {"name": "lost", "command": "python train.py", "code": str(tmp_path / "src"),
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:1", "resources": {"accelerator": "L4:1"},
            "providers": {"aws": {"region": REGION, "role": ROLE, "bucket": BUCKET}}}


def _env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    (tmp_path / "userhome").mkdir(exist_ok=True)
    return {"CLOUDTUNE_HOME": str(tmp_path / "ct"), "HOME": str(tmp_path / "userhome"), "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "CLOUDTUNE_RETRY_DEADLINE": "2", "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint}


def _jobs(moto_server: str) -> list[str]:
    listed = clients(moto_server)["sagemaker_client"].list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    return sorted(j["TrainingJobName"] for j in listed if j["TrainingJobName"].startswith("lost-"))


def _set_in_progress(name: str) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].training_jobs[name]
    job.training_job_status, job.secondary_status = "InProgress", "Training"


def test_a_cli_killed_during_the_create_leaves_a_job_list_shows_and_cancel_stops(moto_server: str, tmp_path: Path) -> None:
    clients(moto_server)["s3_client"].create_bucket(Bucket=BUCKET)
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(_spec(tmp_path)))
    before = set(_jobs(moto_server))
    with CreateStall(moto_server, "hold", _is_create, answer=_stop) as proxy:
        env = _env(tmp_path, proxy.url)
        proc = subprocess.Popen([sys.executable, "-m", "cloudtune.cli", "launch", str(spec), "--provider", "aws",
                                 "--detach"], cwd=tmp_path, env={**env, "PATH": "/usr/bin:/bin",
                                 "PYTHONPATH": ":".join(sys.path)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert proxy.created.wait(120), "the create never reached the service"
        finally:
            proc.kill()
            proc.wait(timeout=30)
        [name] = sorted(set(_jobs(moto_server)) - before)
        _set_in_progress(name)
        listed = cli("list", "--json", cwd=tmp_path, env=env)
        assert listed.rc == 0, listed.err
        [row] = [r for r in json.loads(listed.out) if r["job_id"] == name]
        assert row["state"] in ("pending", "running"), row
        cancel = cli("cancel", name, cwd=tmp_path, env=env)
        assert cancel.rc == 0, cancel.err
        stops = [json.loads(body)["TrainingJobName"] for _, _, body in proxy.answered]
    assert stops and set(stops) == {name}, proxy.answered


def test_a_lost_answer_is_said_found_by_status_and_adopted_by_a_relaunch(moto_server: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtune import api
    from cloudtune.kit.retry import CloudError, RetryPolicy
    from cloudtune.store import JobStore
    from cloudtune_aws.launcher import AwsLauncher

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct"))
    clients(moto_server)["s3_client"].create_bucket(Bucket=BUCKET)
    spec = _spec(tmp_path)
    policy = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02, deadline_s=1.0)
    before = set(_jobs(moto_server))
    with CreateStall(moto_server, "late", _is_create) as proxy:
        launcher = AwsLauncher(**clients(proxy.url), policy=policy, home=tmp_path / "home")
        with pytest.raises(CloudError) as exc:
            api.launch(spec, provider="aws", launcher=launcher)
        found = re.search(r"the job may have been created: cloudtune status (\S+)", exc.value.message)
        assert found, exc.value.message
        name = found.group(1)
        assert JobStore().get(name).extra["launch"] == "unconfirmed"
        assert set(_jobs(moto_server)) == before  # nothing landed yet
        proxy.land()  # ... and now the lost create lands
    direct = AwsLauncher(**clients(moto_server), policy=policy, home=tmp_path / "home")
    _set_in_progress(name)
    assert api.get_job(name, launcher=direct).status() in ("pending", "running")
    record = JobStore().get(name)
    assert record.extra["launch"] == "confirmed" and record.native_id.endswith(f"training-job/{name}")

    JobStore().update(name, extra={**record.extra, "launch": "unconfirmed"})  # as before `status` found it
    again = api.launch(spec, provider="aws", launcher=direct)
    assert again.job_id == name  # adopted: the relaunch made no second job
    assert sorted(set(_jobs(moto_server)) - before) == [name]


def test_a_create_that_never_landed_is_failed_once_its_launch_ended(moto_server: str, tmp_path: Path) -> None:
    clients(moto_server)["s3_client"].create_bucket(Bucket=BUCKET)
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(_spec(tmp_path)))
    with CreateStall(moto_server, "late", _is_create) as proxy:
        run = cli("launch", str(spec), "--provider", "aws", "--detach", cwd=tmp_path, env=_env(tmp_path, proxy.url))
    assert run.rc == 1 and "the job may have been created: cloudtune status " in run.err, run.err
    assert "Traceback" not in run.err
    name = re.search(r"cloudtune status (\S+)", run.err).group(1)
    status = cli("status", name, "--json", cwd=tmp_path, env=_env(tmp_path, moto_server))
    assert status.rc == 0, status.err
    info = json.loads(status.out)
    assert info["state"] == "failed" and "nothing runs and nothing is billed" in info["failure_reason"], info
