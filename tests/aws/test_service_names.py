"""Each error names the service that failed (issue 19 point 4): an S3 endpoint that cannot be reached is "S3:",
not "SageMaker:", whatever its URL (here a loopback port, where the host name says nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.aws.conftest import clients, settings, spec_from, write_data
from tests.cloudfaults import closed_port

pytest.importorskip("boto3")


def test_an_unreachable_s3_endpoint_is_named_s3(moto_server: str, tmp_path: Path, lock_dir: Path) -> None:
    from cloudtune.kit.retry import CloudError, RetryPolicy
    from cloudtune_aws.launcher import AwsLauncher

    write_data(tmp_path)
    sagemaker = clients(moto_server)
    down = clients(f"http://127.0.0.1:{closed_port()}")
    launcher = AwsLauncher(sagemaker["session"], sagemaker["sagemaker_client"], down["s3_client"],
                           policy=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02, deadline_s=1.0),
                           home=tmp_path / "home", lock_dir=lock_dir)
    spec = spec_from({"name": "names", "command": "python train.py", "code": "src",
                      "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:1"}, tmp_path)
    plan = launcher.plan(spec, settings(bucket="names"), suffix="20260101-000000-abcd")
    with pytest.raises(CloudError) as exc:
        launcher.submit(plan)
    assert exc.value.message.startswith("S3: cannot reach the endpoint"), exc.value.message
