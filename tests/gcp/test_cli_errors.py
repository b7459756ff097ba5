"""Cloud errors a user reads, through the real CLI (`cloudtune launch/status/logs/cancel --provider gcp`) against
endpoints on 127.0.0.1: no credentials, a closed port, servers that always answer 500, 503 or 403 -- for Cloud
Storage (the uploads) and Vertex AI (the job). Each ends in one error line and its fix, exit 1 (2 for
configuration), within a bounded time; never a google-api-core traceback. A launch against the emulator and the
Vertex fake also shows that secret files never reach the GCS upload."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from tests.cloudfaults import FaultServer, assert_one_error, bounded, cli, closed_port
from tests.gcp.conftest import BUCKET, PROJECT, REGION
from tests.gcp.fake_vertex import FakeVertex

pytest.importorskip("google.cloud.aiplatform_v1")
# the attempts bound these runs' retries, not the clock (a deadline no loaded machine reaches)
RETRIES = {"CLOUDTUNE_RETRY_DEADLINE": "3000", "CLOUDTUNE_RETRY_ATTEMPTS": "3"}


def _job(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text("print('training')\n")
    (code / "my-project-3f2a1b9c8d7e.json").write_text('{"type": "service_account", "note": "SECRETMARK"}')
    (code / "config.txt").write_text('SECRETMARK {"type": "authorized_user", "refresh_token": "1//abc"}')
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""name: cli-errors
command: python train.py
code: code
image: us-docker.pkg.dev/{PROJECT}/cloudtune/cloudtune-gpu:1
resources: {{accelerator: L4:1}}
providers:
  gcp: {{project: {PROJECT}, region: {REGION}, bucket: "gs://{BUCKET}/ct"}}
""")
    return spec


def _env(tmp_path: Path, storage: str | None = None, vertex: str | None = None) -> dict[str, str]:
    (tmp_path / "userhome").mkdir(exist_ok=True)
    metadata = f"127.0.0.1:{closed_port()}"  # no GCE metadata server: credentials come from nowhere
    env = {"CLOUDTUNE_HOME": str(tmp_path / "ct"), "HOME": str(tmp_path / "userhome"),
           "CLOUDSDK_CONFIG": str(tmp_path / "userhome" / "gcloud"), "GCE_METADATA_HOST": metadata,
           "GCE_METADATA_IP": metadata, **RETRIES}
    if storage:
        env["STORAGE_EMULATOR_HOST"] = storage
    if vertex:
        env["CLOUDTUNE_GCP_API_ENDPOINT"] = vertex
    return env


def _launch(tmp_path: Path, env: dict[str, str]):
    return cli("launch", str(_job(tmp_path)), "--provider", "gcp", "--detach", cwd=tmp_path, env=env)


def test_no_credentials(tmp_path: Path) -> None:
    run = _launch(tmp_path, _env(tmp_path))
    assert_one_error(run, 2, "default credentials were not found")
    assert "gcloud auth application-default login" in run.err
    bounded(run)


def test_storage_closed_port(tmp_path: Path) -> None:
    run = _launch(tmp_path, _env(tmp_path, storage=f"http://127.0.0.1:{closed_port()}"))
    assert_one_error(run, 1, "cannot reach the endpoint")
    bounded(run, retried=True)


@pytest.mark.parametrize("mode,rc,needle", [
    ("500", 1, "We encountered an internal error"),
    ("503", 1, "Please reduce your request rate"),
    ("403", 2, "not authorized"),
])
def test_storage_failing(tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    with FaultServer(mode) as server:
        run = _launch(tmp_path, _env(tmp_path, storage=server.url))
    assert_one_error(run, rc, needle)
    bounded(run)
    assert ("retrying in" in run.err) == (mode != "403")
    if mode == "403":  # not retried (google-auth's session may re-send once after refreshing credentials)
        assert server.requests <= 2


@pytest.mark.parametrize("mode,rc,needle", [
    ("closed", 1, "cannot reach the endpoint"),
    ("500", 1, "We encountered an internal error"),
    ("403", 2, "not authorized"),
])
def test_vertex_failing_after_the_uploads(gcs, tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    import os

    storage = os.environ["STORAGE_EMULATOR_HOST"]
    if mode == "closed":
        run = _launch(tmp_path, _env(tmp_path, storage=storage, vertex=f"http://127.0.0.1:{closed_port()}"))
    else:
        with FaultServer(mode) as server:
            run = _launch(tmp_path, _env(tmp_path, storage=storage, vertex=server.url))
    assert_one_error(run, rc, needle)
    bounded(run)


def test_launch_through_the_cli_uploads_no_secret(gcs, tmp_path: Path) -> None:
    import os

    with FakeVertex() as fake:
        run = cli("launch", str(_job(tmp_path)), "--provider", "gcp", "--detach", "--json", cwd=tmp_path,
                  env=_env(tmp_path, storage=os.environ["STORAGE_EMULATOR_HOST"], vertex=fake.url))
        assert run.rc == 0, run.err
        assert len(fake.jobs) == 1 and "SECRETMARK" not in run.out + run.err
    [blob] = [b for b in gcs.list_blobs(BUCKET, prefix="ct/bundles/")]
    with tarfile.open(fileobj=io.BytesIO(blob.download_as_bytes())) as tar:
        names = tar.getnames()
        assert "train.py" in names and not {"my-project-3f2a1b9c8d7e.json", "config.txt"} & set(names)
        assert not any(b"SECRETMARK" in tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert json.loads(run.out)["provider"] == "gcp"


def _running_job(tmp_path: Path) -> str:
    """A Vertex AI job the store holds as running."""
    from cloudtune.store import JobRecord, JobStore

    name = "cli-errors-20260101-000000-abcd"
    now = time.time()
    JobStore(tmp_path / "ct").add(JobRecord(
        job_id=name, provider="gcp", name="cli-errors", state="running", created_at=now, updated_at=now,
        native_id=f"projects/{PROJECT}/locations/{REGION}/customJobs/1001",
        extra={"project": PROJECT, "region": REGION, "job_name": name}))
    return name


@pytest.mark.parametrize("mode,rc,needle", [
    ("closed", 1, "cannot reach the endpoint"),
    ("503", 1, "Please reduce your request rate"),
    ("403", 2, "not authorized"),
])
def test_status_logs_cancel_while_vertex_fails(tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    job_id = _running_job(tmp_path)
    commands = (("status", job_id), ("logs", job_id), ("logs", job_id, "--follow"), ("cancel", job_id))
    with FaultServer("500" if mode == "closed" else mode) as server:
        endpoint = f"http://127.0.0.1:{closed_port()}" if mode == "closed" else server.url
        for args in commands:
            run = cli(*args, cwd=tmp_path, env=_env(tmp_path, vertex=endpoint))
            assert_one_error(run, rc, needle)
            bounded(run)


def _service_account(tmp_path: Path, token_uri: str) -> Path:
    """A service-account key made here (a fresh RSA key) whose token endpoint is `token_uri` on this machine
    (google-auth honours a service account's token_uri; a user credential's always goes to Google)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
                                "private_key": pem, "client_email": f"ct@{PROJECT}.iam.gserviceaccount.com",
                                "client_id": "1", "token_uri": token_uri}))
    return path


@pytest.mark.parametrize("mode,rc,needle", [
    ("missing", 2, "was not found"),                              # GOOGLE_APPLICATION_CREDENTIALS names no file
    ("not-json", 2, "not a valid json"),                          # ... a file that is no key
    ("closed", 1, "cannot reach Google's sign-in endpoint"),      # the token endpoint is unreachable
    ("403", 2, "the credentials were refused"),                   # expired or revoked credentials
])
def test_credential_files(tmp_path: Path, mode: str, rc: int, needle: str) -> None:
    env = _env(tmp_path)
    if mode == "missing":
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "nope.json")
    elif mode == "not-json":
        (tmp_path / "key.json").write_text("not json")
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "key.json")
    with FaultServer("403") as server:
        if mode in ("closed", "403"):
            uri = f"http://127.0.0.1:{closed_port()}/token" if mode == "closed" else f"{server.url}/token"
            env["GOOGLE_APPLICATION_CREDENTIALS"] = str(_service_account(tmp_path, uri))
        run = _launch(tmp_path, env)
    assert_one_error(run, rc, needle)
    bounded(run)
    assert "PRIVATE KEY" not in run.err
    if mode == "403":
        assert server.requests >= 1  # the refusal came from the endpoint on this machine
    if mode == "closed":
        assert "127.0.0.1" in run.err and "googleapis.com" not in run.err
