"""Shared fixtures for the SageMaker launcher tests. Everything is offline; servers bind 127.0.0.1 only."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

ROOT = Path(__file__).resolve().parents[2]
try:  # the plugin is normally installed (pip install -e launchers/aws); a bare checkout works too
    import cloudtune_aws  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "launchers" / "aws"))

from cloudtune.spec import validate_spec  # noqa: E402
from cloudtune_aws.settings import AwsSettings  # noqa: E402

SUFFIX = "20260101-000000-abcd"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
BUCKET = "cloudtune-test"
REGION = "us-east-1"


def settings(**kw: Any) -> AwsSettings:
    return AwsSettings(**{"region": REGION, "role": ROLE, "bucket": BUCKET, **kw})


def spec_from(data: dict[str, Any], base: Path):
    return validate_spec(data, base_dir=base)


def write_data(base: Path) -> None:
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "data/train.jsonl").write_text('{"text": "the quick brown fox"}\n' * 20)
    (base / "data/eval").mkdir(exist_ok=True)
    (base / "data/eval/part-0.jsonl").write_text('{"text": "jumps over"}\n' * 5)
    (base / "data/eval/part-1.jsonl").write_text('{"text": "the lazy dog"}\n' * 5)
    (base / "model").mkdir(exist_ok=True)
    (base / "model/config.json").write_text('{"model_type": "gpt2"}\n')
    (base / "model/model.safetensors").write_bytes(placeholder_weights())  # the smallest weights and tokenizer
    (base / "model/tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)      # the preflight takes for them
    (base / "src").mkdir(exist_ok=True)
    (base / "src/train.py").write_text("print('training')\n")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(h))
    return h


# ------------------------------------------------------------------ moto
@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("boto3")
    pytest.importorskip("moto", reason="moto[server] is needed")
    record = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    os.environ["MOTO_RECORDER_FILEPATH"] = str(record)  # read when moto's recorder is created (at import)
    pytest.importorskip("flask", reason="moto[server] is needed")
    from moto.moto_api import recorder
    from moto.server import ThreadedMotoServer

    recorder._location = str(record)  # in case moto was imported earlier by something else
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def clients(endpoint: str, max_attempts: int = 1) -> dict[str, Any]:
    """boto3 clients bound to a loopback endpoint, with dummy credentials and botocore retries off
    (the launcher's own bounded retries are what the tests exercise)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    cfg = Config(retries={"total_max_attempts": max_attempts, "mode": "standard"}, connect_timeout=5, read_timeout=10,
                 s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
    return {
        "session": session,
        "sagemaker_client": session.client("sagemaker", endpoint_url=endpoint, config=cfg),
        "s3_client": session.client("s3", endpoint_url=endpoint, config=cfg),
        "logs_client": session.client("logs", endpoint_url=endpoint, config=cfg),
    }

