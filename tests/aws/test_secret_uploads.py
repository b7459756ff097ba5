"""Secrets by design, through a real launch to S3 (moto on 127.0.0.1): no credential file of the code dir or of a
local input directory reaches the bucket, and what was uploaded is what the plan hashed."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cloudtune.bundle import build_bundle
from cloudtune.kit.retry import RetryPolicy
from tests.aws.conftest import SUFFIX, clients, settings, spec_from
from tests.test_secret_files import INNOCENT, MARK, all_kinds, write

pytest.importorskip("boto3")
BUCKET = "cloudtune-secret-uploads"


def _object_bytes(s3: object, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]


def test_no_credential_file_reaches_s3(moto_server: str, tmp_path: Path, lock_dir: Path) -> None:
    from cloudtune_aws.launcher import AwsLauncher

    c = clients(moto_server, max_attempts=3)
    c["s3_client"].create_bucket(Bucket=BUCKET)
    write(tmp_path / "src", {**all_kinds(), "main.py": "print('training')\n"})
    write(tmp_path / "data", {**all_kinds(), **INNOCENT})
    spec = spec_from({"name": "secret-uploads", "resources": {"accelerator": "L4:1"}, "command": "python main.py",
                      "code": "src", "inputs": {"data": "data"}}, tmp_path)
    launcher = AwsLauncher(**c, home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01), lock_dir=lock_dir)
    plan = launcher.plan(spec, settings(bucket=BUCKET), suffix=SUFFIX, bundle=build_bundle(Path(spec.code)))
    launcher.submit(plan)

    s3 = c["s3_client"]
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    data_keys = [k for k in keys if k.split("/", 1)[0] == "inputs"]
    assert {k.split("/data/", 1)[1] for k in data_keys} == set(INNOCENT)
    for key in data_keys:
        assert MARK.encode() not in _object_bytes(s3, key), key
    bundles = [k for k in keys if k.split("/", 1)[0] == "bundles"]
    assert bundles
    for key in bundles:
        with tarfile.open(fileobj=io.BytesIO(_object_bytes(s3, key))) as tar:
            names = set(tar.getnames())
            assert "main.py" in names and not (names & set(all_kinds()))
            content = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
        assert MARK.encode() not in content
