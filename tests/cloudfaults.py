"""Loopback endpoints that fail the way clouds fail, and a CLI runner, for the cloud-error tests.

`FaultServer(mode)` binds 127.0.0.1 and answers every request with one failure: "500", "503" (a throttle) or
"403" (access denied), in the wire format of the API that was called (AWS JSON, S3 XML, Google JSON, Azure
Resource Manager JSON). It counts
the requests it answered. `closed_port()` is a port nothing listens on. Every server is stopped on exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ANSWERS = {
    # mode: (status, AWS JSON __type, S3 code, Google status, the service's message)
    "500": (500, "InternalFailure", "InternalError", "INTERNAL", "We encountered an internal error. Please try again."),
    "503": (503, "ThrottlingException", "SlowDown", "UNAVAILABLE", "Please reduce your request rate."),
    "403": (403, "AccessDeniedException", "AccessDenied", "PERMISSION_DENIED",
            "User: arn:aws:iam::123456789012:user/dev is not authorized to perform this action"),
}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gives up and resets the connection is part of the scenario


class FaultServer:
    def __init__(self, mode: str) -> None:
        status, aws_type, s3_code, google_status, message = ANSWERS[mode]
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                if self.headers.get("X-Amz-Target"):  # AWS JSON protocol (SageMaker, CloudWatch Logs)
                    code = 400 if status == 403 else status  # AWS JSON services answer AccessDenied with 400
                    body, kind = json.dumps({"__type": aws_type, "message": message}).encode(), "application/x-amz-json-1.1"
                elif "/providers/Microsoft." in self.path:  # Azure Resource Manager (Azure ML): {"error": {code, message}}
                    code = status
                    arm = {500: "InternalServerError", 503: "ServerBusy", 403: "AuthorizationFailed"}[status]
                    body, kind = json.dumps({"error": {"code": arm, "message": message}}).encode(), "application/json"
                elif "/storage/" in self.path or "/v1/" in self.path or "/v2/" in self.path or "/upload/" in self.path:
                    code = status
                    body = json.dumps({"error": {"code": status, "message": message, "status": google_status}}).encode()
                    kind = "application/json"
                else:  # S3 REST-XML
                    code = status
                    body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{s3_code}</Code>"
                            f"<Message>{message}</Message></Error>").encode()
                    kind = "application/xml"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> Run:
    """`python -m cloudtune.cli ARGS` in a clean environment (only PATH, HOME and what `env` adds)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def start_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python -m cloudtune.cli ARGS` started in the background (the environment of `cli`); the caller stops it by
    its PID (`proc.kill(); proc.wait()`)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")}
    return subprocess.Popen([sys.executable, "-m", "cloudtune.cli", *args], cwd=cwd, env={**base, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_during_create(proc: subprocess.Popen[bytes], created: threading.Event, timeout: float = 120) -> None:
    """SIGKILL `proc` once its create reached the service (`created` set), as a CLI killed between the cloud's
    create and the job store's write; waits for it (no zombie is left to look alive)."""
    try:
        assert created.wait(timeout), "the create never reached the service"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def assert_one_error(run: Run, rc: int, *needles: str) -> str:
    """The run ended with exit `rc` and one error (its line and its "To fix:" line), no traceback; returns it."""
    assert run.rc == rc, (run.rc, run.out, run.err)
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err
    errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.err
    tail = run.err[run.err.index(errors[0]):].splitlines()
    assert len(tail) == 2 and tail[1].startswith("To fix: "), run.err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def bounded(run: Run, retried: bool | None = None) -> None:
    """The run's waiting was bounded by the policy, read from its events (never from how long it took, which
    depends on the machine): each call's retry lines count its attempts 2, 3, ... up to at most the policy's
    maximum. `retried`: whether there must be (True) or must not be (False) any retry."""
    from cloudtune.kit.retry import RetryPolicy

    most = RetryPolicy().max_attempts
    lines = [line for line in run.err.splitlines() if "retrying in" in line]
    shown = [int(line.rsplit("(attempt ", 1)[1].split(" of ")[0]) for line in lines]
    assert all(2 <= n <= most and (n == 2 or i and shown[i - 1] == n - 1) for i, n in enumerate(shown)), run.err
    if retried is not None:
        assert bool(lines) == retried, run.err


class BlackHole:
    """A loopback port that accepts connections and never answers (a hung service or a stuck proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def __enter__(self) -> "BlackHole":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


class FaultyProxy:
    """A loopback proxy in front of a cloud fake: a `rate` share of requests fail (500, 503, or a connection dropped
    before the request reaches the service), and half of the creates that get through (`is_create(method, path)`)
    reach the service but lose their answer. Errors carry a JSON body that Google and Azure clients both parse."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

    def __init__(self, upstream: str, rate: float, seed: int, is_create: Callable[[str, str], bool]) -> None:
        import random
        from collections import Counter
        from urllib.parse import urlparse

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
                    if key.lower() not in FaultyProxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = proxy.pick(is_create(self.command, self.path.split("?")[0]))
                if kind in ("500", "503"):
                    data = json.dumps({"error": {"code": int(kind), "message": f"injected {kind}",
                                                 "status": "UNAVAILABLE"}}).encode()
                    self._reply(int(kind), data, [("Content-Type", "application/json")])
                elif kind == "drop":
                    self._drop()
                else:
                    status, headers, data = proxy.forward(self.command, self.path, dict(self.headers.items()), body)
                    if kind == "drop-after":
                        with proxy.lock:
                            proxy.lost_creates += 1
                        self._drop()
                    else:
                        self._reply(status, data, headers)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def pick(self, create: bool) -> str | None:
        """The fault for the next request: 500, 503, drop, drop-after (a create only) or None."""
        with self.lock:
            kind = self.rng.choice(["500", "503", "drop"]) if self.rng.random() < self.rate else None
            if create and kind is None and self.rng.random() < 0.5:
                kind = "drop-after"
            if kind:
                self.faults[kind] += 1
            return kind

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        import http.client

        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        sent = {k: v for k, v in headers.items() if k.lower() not in self.HOP_BY_HOP}
        conn.request(method, path, body=body or None, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class CreateStall:
    """A loopback proxy in front of a cloud fake that forwards every request, except a job create
    (`is_create(method, path, headers)`), which it handles by `mode`:

    - "hold": the create reaches the service, and its answer never comes back (the connection is held open until
      the proxy stops): a CLI killed while it waits leaves a job it never recorded; `created` is set once it landed.
    - "late": the create is not forwarded; the connection is dropped, as is every later create; `land()` then sends
      the first one to the service (a create whose answer was lost and which lands after the client gave up).

    `answer(method, path, headers) -> (status, body) | None` may answer a request itself (a call the fake lacks)."""

    def __init__(self, upstream: str, mode: str, is_create: Callable[[str, str, dict[str, str]], bool],
                 answer: Callable[[str, str, dict[str, str], bytes], tuple[int, bytes] | None] | None = None) -> None:
        from urllib.parse import urlparse

        self.upstream = urlparse(upstream)
        self.mode = mode
        self.created = threading.Event()
        self.held: list[tuple[str, str, dict[str, str], bytes]] = []
        self.answered: list[tuple[str, str, bytes]] = []
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                own = answer(self.command, self.path, headers, body) if answer else None
                if own is not None:
                    proxy.answered.append((self.command, self.path, body))
                    return self._reply(own[0], [("Content-Type", "application/json")], own[1])
                if is_create(self.command, self.path, headers):
                    if proxy.mode == "hold":
                        proxy.forward(self.command, self.path, headers, body)
                        proxy.created.set()
                        proxy._stop.wait(120)  # never answer while the test runs
                    else:
                        proxy.held.append((self.command, self.path, headers, body))
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return None
                status, out_headers, data = proxy.forward(self.command, self.path, headers, body)
                return self._reply(status, out_headers, data)

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in FaultyProxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        import http.client

        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in FaultyProxy.HOP_BY_HOP}
            sent["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def land(self) -> None:
        """Send the first held create to the service (mode "late")."""
        method, path, headers, body = self.held[0]
        status, _, data = self.forward(method, path, headers, body)
        assert status < 300, (status, data)

    def __enter__(self) -> "CreateStall":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
