"""Cloud errors a user reads, through the real CLI (`cloudtune launch/status/logs/cancel --provider aws`) against
endpoints on 127.0.0.1: no credentials, a closed port, a server that always answers 500 or 503, access denied.
Each ends in one error line and its fix, exit 1 (2 for configuration), within a bounded time, with a line per
retry; never a botocore traceback. A launch against moto also shows that secret files never reach the S3 upload."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.aws.conftest import clients
from tests.cloudfaults import FaultServer, assert_one_error, bounded, cli, closed_port

pytest.importorskip("boto3")
BUCKET = "cli-errors"
# the attempts bound these runs' retries, not the clock: a deadline no loaded machine reaches and 3 attempts per
# call, so whether a call retries never depends on how fast the machine is
RETRIES = {"CLOUDTUNE_RETRY_DEADLINE": "3000", "CLOUDTUNE_RETRY_ATTEMPTS": "3"}



def _job(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('training')\n")
    (code / ".npmrc").write_text("//registry.npmjs.org/:_authToken=SECRETMARK-npm\n")
    (code / "notes.txt").write_text("SECRETMARK-pem\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1y2z3abcdefghijkl\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""name: cli-errors
command: python train.py
code: code
image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:1
resources: {{accelerator: L4:1}}
providers:
  aws: {{region: us-east-1, role: "arn:aws:iam::123456789012:role/SageMakerExecution", bucket: {BUCKET}}}
""")
    return spec


def _env(tmp_path: Path, endpoint: str | None, creds: bool = True) -> dict[str, str]:
    (tmp_path / "userhome").mkdir(exist_ok=True)
    env = {"CLOUDTUNE_HOME": str(tmp_path / "ct"), "HOME": str(tmp_path / "userhome"), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           **RETRIES, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
    if creds:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def test_no_credentials(tmp_path: Path) -> None:
    run = cli("launch", str(_job(tmp_path)), "--provider", "aws", "--detach", cwd=tmp_path,
              env=_env(tmp_path, f"http://127.0.0.1:{closed_port()}", creds=False))
    assert_one_error(run, 2, "Unable to locate credentials")
    assert "aws configure" in run.err
    bounded(run, retried=False)


def test_closed_port(tmp_path: Path) -> None:
    run = cli("launch", str(_job(tmp_path)), "--provider", "aws", "--detach", cwd=tmp_path,
              env=_env(tmp_path, f"http://127.0.0.1:{closed_port()}"))
    assert_one_error(run, 1, "cannot reach the endpoint")
    assert "AWS_ENDPOINT_URL" in run.err
    bounded(run, retried=True)


@pytest.mark.parametrize("mode,rc,needle", [
    ("500", 1, "InternalError: We encountered an internal error"),
    ("503", 1, "SlowDown: Please reduce your request rate"),
    ("403", 2, "AccessDenied"),
])
def test_failing_server(tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    with FaultServer(mode) as server:
        run = cli("launch", str(_job(tmp_path)), "--provider", "aws", "--detach", cwd=tmp_path, env=_env(tmp_path, server.url))
    assert_one_error(run, rc, needle)
    bounded(run)
    if mode == "403":
        assert server.requests == 1 and "retrying" not in run.err and "IAM" in run.err  # no retry of a refusal
    else:
        assert server.requests >= 2 and "retrying in" in run.err


def test_the_code_upload_holds_no_secret(moto_server: str, tmp_path: Path) -> None:
    clients(moto_server)["s3_client"].create_bucket(Bucket=BUCKET)
    dry = cli("launch", str(_job(tmp_path)), "--provider", "aws", "--dry-run", cwd=tmp_path, env=_env(tmp_path, None))
    assert dry.rc == 0 and "left out 2 path(s)" in dry.out and ".npmrc: secret file name" in dry.out
    assert "notes.txt: holds a PEM private key" in dry.out and "SECRETMARK" not in dry.out + dry.err
    launched = cli("launch", str(tmp_path / "job.yaml"), "--provider", "aws", "--detach", "--json", cwd=tmp_path,
                   env=_env(tmp_path, moto_server))
    assert launched.rc == 0, launched.err
    assert "SECRETMARK" not in launched.out + launched.err
    s3 = clients(moto_server)["s3_client"]
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="bundles/")["Contents"]]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())) as tar:
        assert "train.py" in tar.getnames() and ".npmrc" not in tar.getnames() and "notes.txt" not in tar.getnames()
        assert not any(b"SECRETMARK" in tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    store = (tmp_path / "ct" / "jobs.db").read_bytes() if (tmp_path / "ct" / "jobs.db").exists() else b""
    assert b"SECRETMARK" not in store


def _running_job(tmp_path: Path, suffix: str = "abcd") -> str:
    """A SageMaker job the store holds as running (moto completes its jobs at once, so one is recorded here)."""
    import time

    from cloudtune.store import JobRecord, JobStore

    name = f"cli-errors-20260101-000000-{suffix}"
    now = time.time()
    JobStore(tmp_path / "ct").add(JobRecord(
        job_id=name, provider="aws", name="cli-errors", state="running", created_at=now, updated_at=now,
        native_id=f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        extra={"region": "us-east-1", "job_name": name}))
    return name


def test_status_logs_cancel_while_the_endpoint_is_down(tmp_path: Path) -> None:
    job_id = _running_job(tmp_path)
    down = _env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    for args in (("status", job_id), ("logs", job_id), ("logs", job_id, "--follow"), ("cancel", job_id)):
        run = cli(*args, cwd=tmp_path, env=down)
        assert_one_error(run, 1, "cannot reach the endpoint")
        bounded(run, retried=True)


@pytest.mark.parametrize("mode,rc,needle", [("500", 1, "InternalFailure"), ("403", 2, "AccessDeniedException")])
def test_status_logs_cancel_against_a_failing_server(tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    job_id = _running_job(tmp_path)
    with FaultServer(mode) as server:
        for args in (("status", job_id), ("logs", job_id), ("cancel", job_id)):
            run = cli(*args, cwd=tmp_path, env=_env(tmp_path, server.url))
            assert_one_error(run, rc, needle, "not authorized" if mode == "403" else "internal error")
            bounded(run)


@pytest.mark.parametrize("config,profile,rc,needle,fix", [
    ("", "no-such-profile", 2, "could not be found", "aws configure list-profiles"),
    ("[profile sso]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n"
     "sso_account_id = 123456789012\nsso_role_name = Dev\nregion = us-east-1\n", "sso", 2, "SSO", "aws sso login --profile sso"),
    ("[profile proc]\ncredential_process = /bin/false\nregion = us-east-1\n", "proc", 2, "credential", "credential_process"),
])
def test_profile_problems(tmp_path: Path, config: str, profile: str, rc: int, needle: str, fix: str) -> None:
    """AWS_PROFILE naming no profile, an SSO profile without a sign-in, a failing credential_process: botocore
    raises these outside any call (a traceback before); each is one configuration error."""
    env = _env(tmp_path, f"http://127.0.0.1:{closed_port()}", creds=False)
    (tmp_path / "aws-config").write_text(config)
    env.update(AWS_CONFIG_FILE=str(tmp_path / "aws-config"), AWS_PROFILE=profile)
    run = cli("launch", str(_job(tmp_path)), "--provider", "aws", "--detach", cwd=tmp_path, env=env)
    assert_one_error(run, rc, needle)
    assert fix in run.err
    bounded(run, retried=False)


def test_a_service_that_never_answers_is_not_a_silent_wait(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts and never answers: a line once an attempt has waited `slow_after_s`, then the SDK's
    read timeout ends each attempt, and the second attempt (the policy's last) ends the call. The deadline is far
    above the two read timeouts, so how fast the machine is does not decide whether a retry happens."""
    import boto3
    from botocore.config import Config

    from cloudtune.kit.retry import CloudError, RetryPolicy
    from cloudtune.launcher import JobRef
    from cloudtune_aws.launcher import AwsLauncher
    from tests.cloudfaults import BlackHole

    with BlackHole() as hole:
        session = boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1")
        sm = session.client("sagemaker", endpoint_url=hole.url,
                            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1.5))
        launcher = AwsLauncher(session, sm, policy=RetryPolicy(max_attempts=2, base_s=0.1, cap_s=0.2, deadline_s=120.0,
                                                                   slow_after_s=0.5))
        ref = JobRef("aws", "j", "arn:aws:sagemaker:us-east-1:123456789012:training-job/j", extra={"job_name": "j"})
        with pytest.raises(CloudError) as exc:  # raised at all: the attempts ended
            launcher.status(ref)
    assert "Read timeout" in exc.value.message
    err = capsys.readouterr().err
    assert "[cloudtune] describe the training job: no answer after 0.5 s; still waiting for SageMaker" in err
    assert err.count("retrying in") == 1  # a read timeout is transient: retried, once (2 attempts)


def test_list_pays_for_an_unreachable_endpoint_once(tmp_path: Path) -> None:
    """`cloudtune list` asks the cloud for each running job; once one call has spent its deadline on an endpoint
    that refuses connections, the others are not retried (the store's state is shown)."""
    jobs = [_running_job(tmp_path, f"{i:04x}") for i in range(4)]
    # RETRIES: the first call retries exactly twice and the other jobs' calls not at all, however fast the machine is
    env = _env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    run = cli("list", cwd=tmp_path, env=env)
    assert run.rc == 0 and "Traceback" not in run.err, run.err
    assert all(job in run.out for job in jobs)
    retries = [line for line in run.err.splitlines() if "retrying in" in line]
    assert [line.split("(attempt ")[1] for line in retries] == ["2 of 3)", "3 of 3)"], run.err


def test_ctrl_c_while_retrying_is_one_line(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    job_id = _running_job(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")},
           **_env(tmp_path, f"http://127.0.0.1:{closed_port()}"), "CLOUDTUNE_RETRY_DEADLINE": "60"}
    # started with SIGINT ignored, as every process of a suite run in the background (`bash .ci/run &`) is: the
    # CLI sets the disposition its Ctrl-C handling needs, whatever it inherits
    proc = subprocess.Popen([sys.executable, "-m", "cloudtune.cli", "status", job_id], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "retrying in" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("interrupted"), err
