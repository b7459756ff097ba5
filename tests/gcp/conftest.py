"""Shared fixtures for the Vertex AI launcher tests. Offline; every server binds 127.0.0.1 and is stopped."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:  # the plugin is normally installed (pip install -e launchers/gcp); a bare checkout works too
    import cloudtune_gcp  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "launchers" / "gcp"))

from cloudtune.spec import validate_spec  # noqa: E402
from cloudtune_gcp.settings import GcpSettings  # noqa: E402

SUFFIX = "20260101-000000-abcd"
PROJECT = "ml-proj"
REGION = "us-central1"
BUCKET = "cloudtune-test"


def settings(**kw: Any) -> GcpSettings:
    return GcpSettings(**{"project": PROJECT, "region": REGION, "bucket": f"gs://{BUCKET}/ct", **kw})


def spec_from(data: dict[str, Any], base: Path):
    return validate_spec(data, base_dir=base)


def write_data(base: Path, train_bytes: int = 0) -> None:
    (base / "data/eval").mkdir(parents=True, exist_ok=True)
    line = '{"text": "the quick brown fox"}\n'
    (base / "data/train.jsonl").write_text(line * max(20, train_bytes // len(line)))
    (base / "data/eval/part-0.jsonl").write_text('{"text": "jumps over"}\n' * 5)
    (base / "src").mkdir(exist_ok=True)
    (base / "src/train.py").write_text("print('training')\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """gcp-storage-emulator on 127.0.0.1 and a storage client bound to it (STORAGE_EMULATOR_HOST)."""
    pytest.importorskip("gcp_storage_emulator")
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    finally:
        server.stop()


def job_client(url: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                          client_options=ClientOptions(api_endpoint=url))


def logging_client(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import logging as cloud_logging

    return cloud_logging.Client(project=PROJECT, credentials=AnonymousCredentials(), _use_grpc=False,
                                client_options={"api_endpoint": url})

