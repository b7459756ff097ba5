"""Launches through a faulty loopback proxy in front of moto: 500s, throttling and dropped connections
(before the request reaches the service, and after it did but before the answer came back).

The proxy also enforces what moto does not: SageMaker training job names are unique (a second create
of a name gets 400 ResourceInUse). Every launch must end with exactly one job: none lost, none duplicated.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.aws.conftest import clients, settings, spec_from, write_data

from cloudtune.kit.retry import RetryPolicy
from cloudtune_aws.launcher import AwsLauncher

pytest.importorskip("boto3")
BUCKET = "faulty-bucket"

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "trailer", "upgrade"}


class FaultyProxy:
    def __init__(self, upstream: str, rate: float, seed: int) -> None:
        self.upstream = urlparse(upstream)
        self.rng = random.Random(seed)
        self.rate = rate
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.created: Counter[str] = Counter()  # CreateTrainingJob calls that reached the service, per name
        self.first_create_dropped: set[str] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                is_json = bool(target)
                name = json.loads(body).get("TrainingJobName") if target.endswith("CreateTrainingJob") else None
                with proxy.lock:
                    roll = proxy.rng.random()
                    kind = proxy.rng.choice(["500", "throttle", "drop", "drop-after"]) if roll < proxy.rate else None
                    if name and name not in proxy.first_create_dropped:  # always lose the first create's answer
                        proxy.first_create_dropped.add(name)
                        kind = "drop-after"
                    if name and kind is None and proxy.created[name]:
                        proxy.faults["resource-in-use"] += 1
                        return self._reply(400, json.dumps({"__type": "ResourceInUse", "message":
                                           f"Training job names must be unique; {name} already exists"}).encode(), is_json)
                    if kind:
                        proxy.faults[kind] += 1
                    if name and kind in (None, "drop-after"):
                        if proxy.created[name]:
                            kind = "drop"  # a retried create that would duplicate: the service refuses; drop it too
                        else:
                            proxy.created[name] += 1
                if kind == "500":
                    return self._reply(500, b'{"__type": "InternalFailure", "message": "injected"}' if is_json else
                                       b"<Error><Code>InternalError</Code><Message>injected</Message></Error>", is_json)
                if kind == "throttle":
                    if is_json:
                        return self._reply(400, b'{"__type": "ThrottlingException", "message": "Rate exceeded"}', True)
                    return self._reply(503, b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>", False)
                if kind == "drop":
                    return self._drop()
                status, headers, data = proxy.forward(self.command, self.path, dict(self.headers), body)
                if kind == "drop-after":
                    return self._drop()
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _reply(self, status: int, data: bytes, is_json: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1" if is_json else "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_faulty_network_gives_exactly_one_job_per_launch(moto_server: str, tmp_path: Path, lock_dir: Path) -> None:
    direct = clients(moto_server)
    direct["s3_client"].create_bucket(Bucket=BUCKET)
    write_data(tmp_path)
    n = 8
    refs = {}
    with FaultyProxy(moto_server, rate=0.3, seed=1234) as proxy:
        for i in range(n):
            # distinct data per launch so every launch uploads, and faults hit HEAD/PUT too
            (tmp_path / "data/train.jsonl").write_text(f'{{"text": "launch {i}"}}\n' * 50)
            spec = spec_from({"name": "faulty", "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                              "train": {"model": "./model"}}, tmp_path)
            launcher = AwsLauncher(**clients(proxy.url), home=tmp_path / "home", policy=RetryPolicy(max_attempts=15, base_s=0.005, cap_s=0.05),
                                   lock_dir=lock_dir)
            plan = launcher.plan(spec, settings(bucket=BUCKET), suffix=f"20260101-000000-{i:04x}")
            ref = launcher.submit(plan)
            assert ref.native_id.endswith(f"/{plan.job_name}")
            refs[plan.job_name] = ref
    assert sum(proxy.faults.values()) > n, proxy.faults  # the faults did happen
    assert proxy.faults["drop-after"] >= n  # every launch lost the answer of its first create
    assert dict(proxy.created) == {name: 1 for name in refs}  # none duplicated
    listed = direct["sagemaker_client"].list_training_jobs(MaxResults=100, NameContains="faulty")["TrainingJobSummaries"]
    assert sorted(j["TrainingJobName"] for j in listed) == sorted(refs)  # none lost
