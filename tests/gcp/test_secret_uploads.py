"""Secrets by design, through a real launch to Cloud Storage (gcp-storage-emulator and the Vertex AI fake on
127.0.0.1): no credential file of the code dir or of a local input directory reaches the bucket."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.cloudfaults import cli, closed_port
from tests.gcp.conftest import BUCKET, PROJECT, REGION
from tests.gcp.fake_vertex import FakeVertex
from tests.test_secret_files import INNOCENT, MARK, all_kinds, write

pytest.importorskip("google.cloud.aiplatform_v1")


def test_no_credential_file_reaches_gcs(gcs, tmp_path: Path) -> None:
    write(tmp_path / "code", {**all_kinds(), "train.py": "print('training')\n"})
    write(tmp_path / "data", {**all_kinds(), **INNOCENT})
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""name: secret-uploads
command: python train.py
code: code
inputs: {{data: data}}
image: us-docker.pkg.dev/{PROJECT}/cloudtune/cloudtune-gpu:1
resources: {{accelerator: L4:1}}
providers:
  gcp: {{project: {PROJECT}, region: {REGION}, bucket: "gs://{BUCKET}/secrets-test"}}
""")
    (tmp_path / "userhome").mkdir()
    metadata = f"127.0.0.1:{closed_port()}"
    env = {"CLOUDTUNE_HOME": str(tmp_path / "ct"), "HOME": str(tmp_path / "userhome"),
           "CLOUDSDK_CONFIG": str(tmp_path / "userhome" / "gcloud"), "GCE_METADATA_HOST": metadata,
           "GCE_METADATA_IP": metadata, "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"]}
    with FakeVertex() as fake:
        env["CLOUDTUNE_GCP_API_ENDPOINT"] = fake.url
        run = cli("launch", str(spec), "--provider", "gcp", "--detach", cwd=tmp_path, env=env)
        assert run.rc == 0, run.err
        assert MARK not in run.out + run.err
    inputs = [b for b in gcs.list_blobs(BUCKET, prefix="secrets-test/inputs/")]
    assert {b.name.split("/data/", 1)[1] for b in inputs} == set(INNOCENT)
    assert not any(MARK.encode() in b.download_as_bytes() for b in inputs)
    [blob] = [b for b in gcs.list_blobs(BUCKET, prefix="secrets-test/bundles/")]
    with tarfile.open(fileobj=io.BytesIO(blob.download_as_bytes())) as tar:
        names = set(tar.getnames())
        assert "train.py" in names and not names & set(all_kinds())
        assert not any(MARK.encode() in tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
