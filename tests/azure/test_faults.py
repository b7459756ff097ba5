"""Launches through a faulty loopback proxy in front of the Azure ML fake: 500s, 503s, dropped connections before
the request reaches the service, and job PUTs whose answer is lost after the job was made. Every launch must end
with exactly one job: the job name is ours, so a retry finds (or re-PUTs) the job under that name."""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cloudtune.kit.retry import RetryPolicy
from tests.azure.planning import settings, write_data
from tests.azure.test_submit import _plan, _spec

from cloudtune_azure.launcher import AzureLauncher

pytest.importorskip("azure.ai.ml")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultyProxy:
    """Forwards to `upstream`, failing a `rate` share of requests (500, 503 or a dropped connection) and losing
    the answer of half the job PUTs that got through."""

    def __init__(self, upstream: str, rate: float, seed: int) -> None:
        self.upstream = urlparse(upstream)
        self.rng = random.Random(seed)
        self.rate = rate
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.lost_creates = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_create = self.command == "PUT" and "/jobs/" in self.path.split("?")[0]
                with proxy.lock:
                    kind = proxy.rng.choice(["500", "503", "drop"]) if proxy.rng.random() < proxy.rate else None
                    if is_create and kind is None and proxy.rng.random() < 0.5:
                        kind = "drop-after"
                    if kind:
                        proxy.faults[kind] += 1
                if kind in ("500", "503"):
                    data = b'{"error": {"code": "ServiceError", "message": "injected %s"}}' % kind.encode()
                    self._reply(int(kind), data, [("Content-Type", "application/json")])
                    return
                if kind == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if kind == "drop-after":
                    with proxy.lock:
                        proxy.lost_creates += 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._reply(resp.status, data, resp.getheaders())

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_faulty_network_gives_exactly_one_job_per_launch(azureml_fake, azurite, ml_client_kwargs, tmp_path: Path,
                                                         lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.ai.ml import MLClient

    spec = _spec(tmp_path)
    policy = RetryPolicy(max_attempts=20, base_s=0.002, cap_s=0.02, deadline_s=30)
    n = 10
    with FaultyProxy(azureml_fake.url, rate=0.3, seed=7) as proxy:
        monkeypatch.setenv("AZUREML_DEV_URL_MFE", proxy.url)
        refs = []
        for i in range(n):
            launcher = AzureLauncher(MLClient(**ml_client_kwargs, retry_total=0), policy=policy,
                                     home=tmp_path / "home", lock_dir=lock_dir)
            refs.append(launcher.submit(_plan(launcher, spec, tmp_path, suffix=f"20260101-0000{i:02d}-abcd")))
    assert len(azureml_fake.jobs) == n
    assert {ref.native_id for ref in refs} == set(azureml_fake.jobs)  # each launch holds the job it made
    assert proxy.lost_creates >= 2 and sum(proxy.faults.values()) >= 5, (proxy.faults, proxy.lost_creates)
