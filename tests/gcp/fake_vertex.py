"""A loopback fake of the Vertex AI REST API (customJobs, hyperparameterTuningJobs) and Cloud Logging's entries:list,
for tests.

It answers at the HTTP boundary only: the real SDK clients (aiplatform_v1.JobServiceClient over REST,
google.cloud.logging over HTTP) talk to it. Jobs are kept in memory; a test moves a job through its states and
adds log entries with `set_state` / `log`, and a tuning job's trials (as Vizier reports them) with `add_trial`.
Every request is recorded (`requests`). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_JOBS = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+)/(customJobs|hyperparameterTuningJobs)$")
_JOB = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/(?:customJobs|hyperparameterTuningJobs)/[^/:]+)(:cancel)?$")
_LABEL = re.compile(r'^labels\.([a-z0-9_-]+)="([^"]*)"$')


class FakeVertex:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.entries: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        self._next = 1000
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake._route(self, "GET", None)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake._route(self, "POST", json.loads(raw) if raw else {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeVertex":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- test controls
    def set_state(self, name: str, state: str, error: str | None = None) -> None:
        with self.lock:
            self.jobs[name]["state"] = state
            if error:
                self.jobs[name]["error"] = {"code": 13, "message": error}

    def add_trial(self, name: str, trial: dict[str, Any]) -> None:
        """Add a trial (aiplatform_v1 Trial in REST JSON: id, state, parameters, finalMeasurement...) to tuning job
        `name`."""
        with self.lock:
            self.jobs[name].setdefault("trials", []).append(trial)

    def log(self, job_id: str, replica: str, text: str, seconds: float) -> None:
        stamp = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
        with self.lock:
            self.entries.append({
                "logName": "projects/p/logs/workerpool0-0", "textPayload": text,
                "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                "resource": {"type": "ml_job", "labels": {"job_id": job_id, "task_name": replica}},
            })

    # ---------------------------------------------------------------- routes
    def _route(self, h: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        url = urlparse(h.path)
        with self.lock:
            self.requests.append((method, url.path, body))
        if url.path == "/v2/entries:list" and method == "POST":
            return h._send(200, self._entries(body))  # type: ignore[attr-defined]
        m = _JOBS.match(url.path)
        if m and method == "POST":
            return h._send(200, self._create(m.group(1), body, m.group(2)))  # type: ignore[attr-defined]
        if m and method == "GET":
            query = parse_qs(url.query)
            return h._send(200, self._list(m.group(1), unquote(query.get("filter", [""])[0]), m.group(2)))  # type: ignore[attr-defined]
        m = _JOB.match(url.path)
        if m and m.group(1) in self.jobs:
            if m.group(2) and method == "POST":
                self.set_state(m.group(1), "JOB_STATE_CANCELLED")
                return h._send(200, {})  # type: ignore[attr-defined]
            return h._send(200, self.jobs[m.group(1)])  # type: ignore[attr-defined]
        return h._send(404, {"error": {"code": 404, "message": f"{url.path} not found", "status": "NOT_FOUND"}})  # type: ignore[attr-defined]

    def _create(self, parent: str, body: dict[str, Any], kind: str = "customJobs") -> dict[str, Any]:
        with self.lock:
            self._next += 1
            name = f"{parent}/{kind}/{self._next}"
            job = {**body, "name": name, "state": "JOB_STATE_PENDING", "createTime": "2026-01-01T00:00:00Z"}
            self.jobs[name] = job
        return job

    def _list(self, parent: str, where: str, kind: str = "customJobs") -> dict[str, Any]:
        m = _LABEL.match(where.strip())
        with self.lock:
            jobs = [j for n, j in self.jobs.items() if n.startswith(f"{parent}/{kind}/")
                    and (m is None or j.get("labels", {}).get(m.group(1)) == m.group(2))]
        return {kind: jobs}

    def _entries(self, body: dict[str, Any]) -> dict[str, Any]:
        where = body.get("filter", "")
        job = re.search(r'resource\.labels\.job_id="([^"]+)"', where)
        after = re.search(r'timestamp>"([^"]+)"', where)
        with self.lock:
            out = [e for e in self.entries if job and e["resource"]["labels"]["job_id"] == job.group(1)
                   and (after is None or e["timestamp"] > after.group(1))]
        return {"entries": sorted(out, key=lambda e: e["timestamp"])}
