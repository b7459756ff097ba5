"""`--resume JOB` on SageMaker (moto; issue 10): the new training job's CheckpointConfig S3 URI is the stopped job's,
which SageMaker copies into /opt/ml/checkpoints before the job starts; the store links the two. moto never advances
a job's state: the first job is put in Stopped in moto's backend (in this process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.kit.retry import RetryPolicy
from cloudtune.store import JobStore
from tests.aws.conftest import REGION, clients
from tests.aws.test_lost_launch import BUCKET, _spec

from cloudtune_aws.launcher import AwsLauncher

pytest.importorskip("boto3")


def test_resume_points_the_new_job_at_the_stopped_jobs_checkpoints(moto_server: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct"))
    direct = clients(moto_server)
    direct["s3_client"].create_bucket(Bucket=BUCKET)
    launcher = AwsLauncher(**direct, policy=RetryPolicy(max_attempts=2, base_s=0.01, deadline_s=2),
                           home=tmp_path / "home")
    spec = _spec(tmp_path)
    first = api.launch(spec, provider="aws", launcher=launcher)
    sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].training_jobs[first.job_id].training_job_status = "Stopped"
    assert first.status() == "cancelled"

    again = api.launch(spec, provider="aws", launcher=launcher, resume=first.job_id)
    described = direct["sagemaker_client"].describe_training_job(TrainingJobName=again.job_id)
    assert described["CheckpointConfig"]["S3Uri"] == first.record.extra["checkpoint_uri"]
    assert JobStore().get(again.job_id).extra["resumed_from"] == first.job_id
    assert JobStore().get(first.job_id).extra["resumed_by"] == again.job_id
