"""Launches through a faulty loopback proxy in front of the Vertex fake: 500s, 503s, dropped connections before
the request reaches the service, and creates whose answer is lost after the job was made. Every launch must
end with exactly one job: Vertex assigns job ids itself, so a retry adopts the job by its launch label."""

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
from tests.gcp.conftest import BUCKET, job_client, settings, spec_from
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")


class FaultyProxy:
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

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_create = self.command == "POST" and self.path.split("?")[0].endswith("/customJobs")
                with proxy.lock:
                    kind = proxy.rng.choice(["500", "503", "drop"]) if proxy.rng.random() < proxy.rate else None
                    if is_create and kind is None and proxy.rng.random() < 0.5:
                        kind = "drop-after"  # the job is made, its answer lost
                    if kind:
                        proxy.faults[kind] += 1
                if kind in ("500", "503"):
                    data = b'{"error": {"code": %s, "message": "injected", "status": "UNAVAILABLE"}}' % kind.encode()
                    self.send_response(int(kind))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kind == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=10)
                conn.request(self.command, self.path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if kind == "drop-after":
                    with proxy.lock:
                        proxy.lost_creates += 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_faulty_network_gives_exactly_one_job_per_launch(gcs, tmp_path: Path, lock_dir: Path) -> None:
    gcs.bucket(BUCKET).blob("data/train.jsonl").upload_from_string(b'{"text": "x"}\n')  # submit looks it up
    spec = spec_from({"name": "faulty", "inputs": {"train": f"gs://{BUCKET}/data/train.jsonl"}, "train": {"model": "gpt2"}}, tmp_path)
    policy = RetryPolicy(max_attempts=20, base_s=0.002, cap_s=0.02, deadline_s=30)
    n = 10
    with FakeVertex() as fake, FaultyProxy(fake.url, rate=0.3, seed=7) as proxy:
        launches = []
        for i in range(n):
            launcher = GcpLauncher(job_client(proxy.url), gcs, None, policy=policy, home=tmp_path / "home",
                                   lock_dir=lock_dir)
            ref = launcher.submit(launcher.plan(spec, settings(), suffix=f"20260101-0000{i:02d}-abcd"))
            launches.append((ref, launcher))
        per_launch = Counter(j["labels"]["cloudtune-launch"] for j in fake.jobs.values())
        assert len(fake.jobs) == n and set(per_launch.values()) == {1}, per_launch
        assert {ref.native_id for ref, _ in launches} == set(fake.jobs)  # each launch holds the job it made
        assert proxy.lost_creates >= 2 and sum(proxy.faults.values()) >= 5, (proxy.faults, proxy.lost_creates)
