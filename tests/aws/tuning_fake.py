"""A loopback SageMaker in front of moto's server for what moto lacks of tuning jobs.

moto creates, describes, lists and deletes hyperparameter tuning jobs (a new one is `Completed` at once, with no
training jobs). This proxy answers, at the HTTP boundary and in the AWS JSON wire format, the two operations moto does
not implement: ListTrainingJobsForHyperParameterTuningJob (from the trials a test gives it, as SageMaker's tuner would
report them) and StopHyperParameterTuningJob (the job is then `Stopping`); a DescribeHyperParameterTuningJob answer
carries the status the test set. Everything else is forwarded to moto unchanged. It records each request's target
and body. Binds 127.0.0.1; stopped on exit."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.cloudfaults import FaultyProxy

PREFIX = "SageMaker."


class TuningFake:
    def __init__(self, upstream: str) -> None:
        self._forwarder = FaultyProxy(upstream, rate=0.0, seed=0, is_create=lambda method, path: False)
        self.trials: dict[str, list[dict[str, Any]]] = {}  # tuning job -> TrainingJobSummaries
        self.status: dict[str, str] = {}  # tuning job -> HyperParameterTuningJobStatus to report
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = (self.headers.get("X-Amz-Target") or "").removeprefix(PREFIX)
                status, headers, data = fake.answer(self.command, self.path, dict(self.headers.items()), body, target)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in FaultyProxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes,
               target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        request = json.loads(body) if target and body else {}
        if target:
            with self.lock:
                self.calls.append((target, request))
        name = request.get("HyperParameterTuningJobName", "")
        if target == "ListTrainingJobsForHyperParameterTuningJob":
            if not self._exists(name, headers):
                return _error("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
            return _json({"TrainingJobSummaries": self.trials.get(name, [])})
        if target == "StopHyperParameterTuningJob":
            if not self._exists(name, headers):
                return _error("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
            if self.status.get(name, "Completed") != "InProgress":
                return _error("ValidationException", f"The tuning job {name} has status {self.status.get(name, 'Completed')}")
            self.status[name] = "Stopping"
            return _json({})
        status, out_headers, data = self._forwarder.forward(method, path, headers, body)
        if target == "DescribeHyperParameterTuningJob" and status == 200 and name in self.status:
            described = json.loads(data)
            described["HyperParameterTuningJobStatus"] = self.status[name]
            data = json.dumps(described).encode()
        return status, out_headers, data

    def _exists(self, name: str, headers: dict[str, str]) -> bool:
        """Whether moto has the tuning job (asked with the client's own signed headers)."""
        sent = {**headers, "X-Amz-Target": PREFIX + "DescribeHyperParameterTuningJob"}
        body = json.dumps({"HyperParameterTuningJobName": name}).encode()
        status, _, _ = self._forwarder.forward("POST", "/", sent, body)
        return status == 200

    def __enter__(self) -> "TuningFake":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(value: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(value).encode()


def _error(code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    return 400, [("Content-Type", "application/x-amz-json-1.1")], body


def summary(name: str, number: int, tuned: dict[str, str], status: str, objective: float | None,
            metric: str = "eval_loss", created: float = 1_765_000_000.0) -> dict[str, Any]:
    """A TrainingJobSummary as SageMaker's tuner reports it (timestamps in epoch seconds, as the JSON protocol
    carries them)."""
    entry: dict[str, Any] = {
        "TrainingJobName": f"{name}-{number:03d}-{number:08x}",
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}-{number:03d}-{number:08x}",
        "TuningJobName": name, "CreationTime": created + number, "TrainingStartTime": created + number + 60,
        "TrainingJobStatus": status, "TunedHyperParameters": tuned,
    }
    if status != "InProgress":
        entry["TrainingEndTime"] = created + number + 660
    if objective is not None:
        entry["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": metric, "Value": objective}
        entry["ObjectiveStatus"] = "Succeeded"
    return entry
