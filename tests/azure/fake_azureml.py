"""A loopback fake of the Azure ML workspace REST API, as azure-ai-ml's MLClient calls it, for tests.

It answers at the HTTP boundary only: the real SDK (`MLClient` with `AZUREML_DEV_URL_MFE` pointing here) talks
to it, and blob data lives in Azurite. Served: the workspace (ARM GET) and its discovery document, datastores
(get, list/get_default, listSecrets), code versions (get, list, PUT), computes (get), jobs (PUT, GET, list,
cancel + its LRO), run history's run details and a sweep job's children (its trials, added by `add_trials`), and the
workspace MLflow's `runs/get` (runs added by `log_run`). Everything else answers 404 in ARM's error format and is kept
in `unhandled`, so a test can assert that the SDK called nothing it did not expect.

Jobs advance one status per GET through `script` (NotStarted -> Queued -> Running -> Completed by default); a
test changes that per job with `fail_job`, `keep_running`, `set_script` or `set_status`. When a job reaches
Running the fake writes its user logs into Azurite where Azure ML writes them (see `log_blob_names`), and when
it reaches Completed it writes `model_files` under the job's `model` output path. Every request is recorded
(`requests`: method, path, query, JSON body, headers). `fail_next` makes the next matching request(s) answer a
service error. Binds 127.0.0.1 only; `stop()` (or leaving the `with` block) shuts it down.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"  # the values of tests/azure/planning.py settings()
RESOURCE_GROUP = "ml-rg"
WORKSPACE = "ml-ws"
LOCATION = "eastus"
TENANT = "72f988bf-0000-0000-0000-000000000000"
WORKSPACE_ID = "11111111-2222-3333-4444-555555555555"  # the workspace's GUID (discovery URL, studio links)

# Azurite's well-known development account (https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

BLOBSTORE_CONTAINER = "azureml-blobstore-test"  # workspaceblobstore (the default datastore)
ARTIFACT_CONTAINER = "azureml"  # workspaceartifactstore (run logs, ExperimentRun/dcid.<job>/...)

DEFAULT_SCRIPT = ("NotStarted", "Queued", "Running", "Completed")
TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
_PAST_RUNNING = {"Running", "Finalizing", "Completed", "Failed"}
MAX_BODY = 16 * 1024 * 1024

_PROVIDER = "/providers/Microsoft.MachineLearningServices"
_WS = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.MachineLearningServices"
                 r"/workspaces/([^/]+)(/.*)?$", re.IGNORECASE)
_HISTORY = re.compile(r"^/history/v1\.0(/subscriptions/.+)$")
# the workspace's MLflow REST API, as azureml-mlflow addresses it for mlflow >= 2 (cloudtune_azure.mlflowruns)
_MLFLOW = re.compile(r"^/mlflow/v2\.0/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                     r"Microsoft\.MachineLearningServices/workspaces/[^/]+/api/2\.0/mlflow/(.+)$", re.IGNORECASE)
_OPERATION = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/[^/]+"
                        r"/mfeOperationResults/jc:([^/]+)$", re.IGNORECASE)
_DATASTORE_URI = re.compile(r"^azureml://datastores/([^/]+)/(?:paths/)?(.*)$")

# Real service messages, kept word for word where a public source shows them.
# A PUT of an existing job name: MicrosoftDocs/azure-docs#122250 (2024) shows the service's answer to
# jobs.create_or_update on an existing job whose definition differs, raised by azure-core as HttpResponseError
# (so not 409, which the SDK's error map would raise as ResourceExistsError): a UserError "A job with this name
# already exists..."; Azure/azure-sdk-for-python#47389 (2026) shows its inner error (Immutable /
# JobPropertyImmutable). The REST reference (Jobs - Create Or Update) documents the other half: "Creates and
# executes a Job. For update case, the Tags in the definition passed in will replace Tags in the existing job",
# so a PUT that only changes description, tags, displayName, properties or isArchived is an update (200).
JOB_EXISTS = ("A job with this name already exists. If you are trying to create a new job, use a different name. "
              "If you are trying to update an existing job, the existing job's {fields} cannot be changed. "
              "Only description, tags, displayName, properties, and isArchived can be updated.")
_JOB_MUTABLE = {"description", "tags", "displayName", "properties", "isArchived", "status", "services"}
# azure-ai-ml's own check (azure/ai/ml/_artifacts/_constants.py ASSET_PATH_ERROR) for a code version PUT whose
# codeUri differs from the registered one.
ASSET_PATH_ERROR = "Asset paths cannot be updated."
# ARM's answer to a request without an Authorization header.
NO_AUTH = "Authentication failed. The 'Authorization' header is missing."


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def arm_error(code: str, message: str, inner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ARM error body (`{"error": {"code", "message", ...}}`) azure-core's ARMErrorFormat parses."""
    error: dict[str, Any] = {"code": code, "message": message, "details": [],
                             "additionalInfo": [{"type": "ComponentName", "info": {"value": "managementfrontend"}}]}
    if inner:
        error["innerError"] = inner
    return {"error": error}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]  # names in lower case

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    times: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeJob:
    name: str
    submitted: dict[str, Any]  # the PUT body as received
    resource: dict[str, Any]  # what GET answers (status filled in per request)
    script: list[str]
    step: int = 0
    error: dict[str, Any] | None = None  # {"code", "message"} once Failed
    logs_written: list[str] = field(default_factory=list)
    logs_status: str | None = None  # the status the logs were last written for
    model_written: list[str] = field(default_factory=list)
    gets: int = 0

    @property
    def status(self) -> str:
        return self.script[min(self.step, len(self.script) - 1)]


class FakeAzureML:
    """The fake workspace service. `blob_endpoint` (Azurite's account URL, e.g.
    http://127.0.0.1:10000/devstoreaccount1) is where logs and model files are written; without it none are."""

    def __init__(self, blob_endpoint: str | None = None, account_key: str = AZURITE_KEY, *,
                 subscription: str = SUBSCRIPTION, resource_group: str = RESOURCE_GROUP,
                 workspace: str = WORKSPACE, location: str = LOCATION) -> None:
        self.subscription, self.resource_group, self.workspace, self.location = (
            subscription, resource_group, workspace, location)
        self.blob_endpoint = blob_endpoint
        self.account_key = account_key
        self.ws_id = (f"/subscriptions/{subscription}/resourceGroups/{resource_group}{_PROVIDER}"
                      f"/workspaces/{workspace}")
        self.lock = threading.RLock()
        self._effects = threading.Lock()  # one job's blob writes at a time
        self.requests: list[Recorded] = []
        self.unhandled: list[Recorded] = []
        self.errors: list[str] = []  # exceptions inside the fake, answered as 500
        self.jobs: dict[str, FakeJob] = {}
        self.trials: dict[str, list[FakeJob]] = {}  # a sweep job's children, as run history lists them
        self.mlflow_runs: dict[str, dict[str, Any]] = {}  # the workspace's MLflow runs by run id (= job name)
        self.codes: dict[tuple[str, str], dict[str, Any]] = {}
        self.computes: dict[str, dict[str, Any]] = {}
        self.datastores: dict[str, dict[str, Any]] = {}
        # knobs
        self.default_script: tuple[str, ...] = DEFAULT_SCRIPT
        self.scripts: dict[str, tuple[list[str], dict[str, Any] | None]] = {}  # set before the job exists
        self.model_files: dict[str, bytes] = {"model.txt": b"fake model written by the Azure ML fake\n"}
        self.log_lines: dict[str, list[str]] = {}  # job name -> extra lines for every std_log file
        self.retry_after = "0"  # Retry-After on LRO answers (the SDK's default poll interval is 30 s)
        self.require_auth = True
        self._faults: list[_Fault] = []
        self._blob_client: Any = None

        self.add_datastore("workspaceblobstore", BLOBSTORE_CONTAINER, default=True)
        self.add_datastore("workspaceartifactstore", ARTIFACT_CONTAINER)
        self.add_compute("gpu-cluster", vm_size="Standard_NC24ads_A100_v4", max_nodes=4)

        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # a client that stalls mid-request does not hold a thread for ever

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    return self._send(413, arm_error("RequestEntityTooLarge", "The request body is too large."))
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                try:
                    status, payload, headers = fake._dispatch(
                        self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()})
                except Exception as exc:  # a bug in the fake (or Azurite down): a 500 the test can see
                    fake.errors.append(f"{self.command} {self.path}: {exc!r}")
                    status, payload, headers = 500, arm_error("InternalServerError", repr(exc)), {}
                self._send(status, payload, headers)

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-azureml",
                                        daemon=True)
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeAzureML":
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.server.shutdown()
            self._started = False
        self.server.server_close()
        if self._blob_client is not None:
            self._blob_client.close()

    def __enter__(self) -> "FakeAzureML":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ workspace contents
    def add_datastore(self, name: str, container: str, *, default: bool = False,
                      account: str = AZURITE_ACCOUNT) -> None:
        if default:
            for ds in self.datastores.values():
                ds["properties"]["isDefault"] = False
        self.datastores[name] = {
            "id": f"{self.ws_id}/datastores/{name}", "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob", "accountName": account, "containerName": container,
                "endpoint": "core.windows.net", "protocol": "https",
                "credentials": {"credentialsType": "AccountKey"}, "isDefault": default,
                "serviceDataAccessAuthIdentity": "None", "description": None, "tags": {}, "properties": {},
                "resourceGroup": self.resource_group, "subscriptionId": self.subscription,
            },
            "systemData": {"createdAt": "2026-01-01T00:00:00Z", "createdBy": "fake", "createdByType": "User"},
        }

    def add_compute(self, name: str, *, vm_size: str, max_nodes: int = 4,
                    priority: str = "Dedicated") -> None:
        self.computes[name] = {
            "id": f"{self.ws_id}/computes/{name}", "name": name, "location": self.location,
            "type": "Microsoft.MachineLearningServices/workspaces/computes", "tags": {}, "identity": None,
            "properties": {
                "computeType": "AmlCompute", "computeLocation": self.location, "provisioningState": "Succeeded",
                "description": None, "isAttachedCompute": False, "disableLocalAuth": True,
                "properties": {"vmSize": vm_size, "vmPriority": priority, "osType": "Linux",
                               "scaleSettings": {"minNodeCount": 0, "maxNodeCount": max_nodes,
                                                 "nodeIdleTimeBeforeScaleDown": "PT120S"},
                               "enableNodePublicIp": True, "currentNodeCount": 0, "targetNodeCount": 0,
                               "allocationState": "Steady"},
            },
        }

    def add_code(self, name: str, version: str, code_uri: str) -> None:
        """Register a code version directly (as if an earlier submit had done it)."""
        with self.lock:
            self.codes[(name, version)] = self._code_resource(name, version, {"codeUri": code_uri})

    # ------------------------------------------------------------------ knobs
    def set_script(self, name: str, *statuses: str, error: str | None = None,
                   error_code: str = "UserError") -> None:
        """The statuses job `name` goes through, one per GET (the last one stays). Works before or after the
        job is created. `error` is the message a Failed job reports."""
        err = {"code": error_code, "message": error} if error else None
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                self.scripts[name] = (list(statuses), err)
            else:
                job.script = list(statuses)
                job.step = min(job.step, len(job.script) - 1)
                job.error = err

    def fail_job(self, name: str, message: str = "Execution failed. User process 'python' exited with status "
                 "code 1. Please check log file 'user_logs/std_log.txt' for error details.",
                 code: str = "UserError") -> None:
        """Job `name` goes NotStarted -> Queued -> Running -> Failed, reporting `message`."""
        self.set_script(name, "NotStarted", "Queued", "Running", "Failed", error=message, error_code=code)

    def add_trials(self, sweep: str, *statuses: str) -> list[str]:
        """Trials of sweep job `sweep` as the sweep service starts them: child runs `<sweep>_<n>` (n from 0), each
        holding `statuses[n]` (an Azure ML job status). Returns their names."""
        with self.lock:
            parent = self.jobs[sweep]
            made = []
            for status in statuses:
                name = f"{sweep}_{len(self.trials.get(sweep, [])) + len(made)}"
                resource = copy.deepcopy(parent.resource)
                resource.update(name=name, id=resource["id"].rsplit("/", 1)[0] + "/" + name)
                made.append(FakeJob(name, {}, resource, [status]))
            self.trials.setdefault(sweep, []).extend(made)
        return [job.name for job in made]

    def log_run(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Job `name`'s MLflow run (run id = job name) as its container logged it: params (stored as text, as MLflow
        does) and each metric's latest value."""
        with self.lock:
            self.mlflow_runs[name] = {
                "info": {"run_id": name, "run_name": name, "experiment_id": "1", "status": "FINISHED"},
                "data": {"params": [{"key": k, "value": str(v)} for k, v in params.items()],
                         "metrics": [{"key": k, "value": v, "step": 1, "timestamp": 0} for k, v in metrics.items()]}}

    def _mlflow(self, method: str, what: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]] | None:
        if what != "runs/get" or method != "GET":
            return None
        with self.lock:
            run = self.mlflow_runs.get(query.get("run_id", ""))
        if run is None:  # MLflow's own error answer (mlflow/protos/databricks.proto ErrorCode)
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                         "message": f"Run with id={query.get('run_id')} not found"}, {}
        return 200, {"run": copy.deepcopy(run)}, {}

    def keep_running(self, name: str) -> None:
        """Job `name` goes NotStarted -> Queued -> Running and stays Running."""
        self.set_script(name, "NotStarted", "Queued", "Running")

    def set_status(self, name: str, status: str, error: str | None = None) -> None:
        """Put job `name` in `status` now (and keep it there); writes logs/model as the transition implies."""
        with self.lock:
            job = self.jobs[name]
            job.script = job.script[: job.step + 1] + [status]
            job.step = len(job.script) - 1
            if error:
                job.error = {"code": "UserError", "message": error}
        self._side_effects(job)

    def fail_next(self, method: str, path_pattern: str, status: int, code: str, message: str, *,
                  times: int = 1, headers: dict[str, str] | None = None) -> None:
        """The next `times` requests whose method and path (re.search) match answer `status` with an ARM error
        body {"error": {"code", "message"}} (and `headers`, e.g. Retry-After for a 429)."""
        with self.lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_pattern), status,
                                       arm_error(code, message), times, headers or {}))

    # ------------------------------------------------------------------ assertions
    def calls(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper()) and contains in r.path]

    def job_puts(self, name: str | None = None) -> list[Recorded]:
        return [r for r in self.calls("PUT", "/jobs/") if name is None or r.path.endswith(f"/jobs/{name}")]

    # ------------------------------------------------------------------ blob helpers
    def container_for(self, datastore: str) -> str:
        return self.datastores[datastore]["properties"]["containerName"]

    def blob_location(self, uri: str, job_name: str | None = None) -> tuple[str, str]:
        """(container, blob prefix) of an azureml://datastores/<ds>/paths/<path> URI."""
        m = _DATASTORE_URI.match(uri)
        if not m:
            raise ValueError(f"not a datastore URI: {uri}")
        path = m.group(2)
        if job_name:
            path = path.replace("${{name}}", job_name)
        return self.container_for(m.group(1)), path

    def log_blob_names(self, name: str) -> list[str]:
        """Blob names (container "azureml", the workspaceartifactstore) of job `name`'s user logs: Azure ML's
        common runtime writes `user_logs/std_log.txt` for a one-process job and one
        `user_logs/std_log_process_<rank>.txt` per process (global rank) for a distributed one, under the run's
        artifact folder ExperimentRun/dcid.<job name>/ (the job's `default` output)."""
        with self.lock:
            props = self.jobs[name].submitted.get("properties", {})
        nodes = int((props.get("resources") or {}).get("instanceCount") or 1)
        dist = props.get("distribution") or {}
        per_node = int(dist.get("processCountPerInstance") or 1) if dist else 1
        world = nodes * per_node
        base = f"ExperimentRun/dcid.{name}/user_logs/"
        if world <= 1:
            return [base + "std_log.txt"]
        return [f"{base}std_log_process_{rank}.txt" for rank in range(world)]

    def _blobs(self) -> Any:
        if self._blob_client is None:
            from azure.storage.blob import BlobServiceClient

            self._blob_client = BlobServiceClient(self.blob_endpoint, credential={
                "account_name": self.blob_endpoint.rstrip("/").rsplit("/", 1)[-1],  # type: ignore[union-attr]
                "account_key": self.account_key})
        return self._blob_client

    def _write_blob(self, container: str, name: str, data: bytes) -> None:
        self._blobs().get_blob_client(container, name).upload_blob(data, overwrite=True)

    def _side_effects(self, job: FakeJob) -> None:
        """Logs once the job has reached Running (rewritten when it ends); model files on Completed."""
        if not self.blob_endpoint:
            return
        with self._effects:
            self._write_effects(job)

    def _write_effects(self, job: FakeJob) -> None:
        status = job.status
        if status in _PAST_RUNNING and (not job.logs_written or status in TERMINAL) and job.logs_status != status:
            text = self._log_text(job, status)
            for blob in self.log_blob_names(job.name):
                self._write_blob(ARTIFACT_CONTAINER, blob, text.encode())
            job.logs_written, job.logs_status = self.log_blob_names(job.name), status
        if status == "Completed" and not job.model_written:
            out = (job.resource["properties"].get("outputs") or {}).get("model") or {}
            if out.get("uri"):
                container, prefix = self.blob_location(out["uri"], job.name)
                prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
                for rel, data in self.model_files.items():
                    self._write_blob(container, prefix + rel, data)
                    job.model_written.append(f"{container}/{prefix}{rel}")

    def _log_text(self, job: FakeJob, status: str) -> str:
        lines = [f"cloudtune fake: job {job.name} started", *self.log_lines.get(job.name, [])]
        if status == "Completed":
            lines.append(f"cloudtune fake: job {job.name} finished")
        elif status == "Failed" and job.error:
            lines.append(f"Traceback (most recent call last):\nRuntimeError: {job.error['message']}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, method: str, raw_path: str, body: Any, headers: dict[str, str]
                  ) -> tuple[int, Any, dict[str, str]]:
        url = urlparse(raw_path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        rec = Recorded(method, path, query, body, headers)
        with self.lock:
            self.requests.append(rec)
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    fault.times -= 1
                    return fault.status, copy.deepcopy(fault.body), dict(fault.headers)
        if self.require_auth and not path.startswith("/discovery/") and not headers.get(
                "authorization", "").startswith("Bearer "):
            return 401, arm_error("AuthenticationFailed", NO_AUTH), {}
        try:
            answer = self._route(method, path, query, body)
        except KeyError as exc:  # a body missing what the service requires
            return 400, arm_error("UserError", f"Missing required property {exc}."), {}
        if answer is None:
            with self.lock:
                self.unhandled.append(rec)
            return 404, arm_error("NotFound", f"The fake Azure ML service does not serve {method} {path}."), {}
        return answer

    def _route(self, method: str, path: str, query: dict[str, str], body: Any
               ) -> tuple[int, Any, dict[str, str]] | None:
        if path.startswith("/discovery/") and method == "GET":
            return 200, self._discovery(), {}
        m = _OPERATION.match(path)
        if m and method == "GET":
            return self._operation_result(m.group(1))
        m = _HISTORY.match(path)
        if m:
            return self._history(method, m.group(1))
        m = _MLFLOW.match(path)
        if m:
            return self._mlflow(method, m.group(1), query)
        m = _WS.match(path)
        if not m:
            return None
        sub, rg, ws, rest = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if (sub, rg.lower(), ws.lower()) != (self.subscription, self.resource_group.lower(), self.workspace.lower()):
            return 404, arm_error("ResourceNotFound", f"The Resource '{_PROVIDER[11:]}/workspaces/{ws}' under "
                                  f"resource group '{rg}' was not found."), {}
        parts = [p for p in rest.split("/") if p]
        if not parts:
            return (200, self._workspace(), {}) if method == "GET" else None
        kind = parts[0]
        if kind == "datastores":
            return self._datastores(method, parts[1:], query)
        if kind == "codes":
            return self._codes(method, parts[1:], query, body)
        if kind == "computes":
            return self._computes(method, parts[1:])
        if kind == "jobs":
            return self._jobs(method, parts[1:], query, body)
        return None

    # ------------------------------------------------------------------ workspace
    def _workspace(self) -> dict[str, Any]:
        return {
            "id": self.ws_id, "name": self.workspace, "location": self.location,
            "type": "Microsoft.MachineLearningServices/workspaces", "kind": "Default",
            "identity": {"type": "SystemAssigned", "principalId": str(uuid.UUID(int=1)), "tenantId": TENANT},
            "sku": {"name": "Basic", "tier": "Basic"}, "tags": {},
            "properties": {
                "friendlyName": self.workspace, "workspaceId": WORKSPACE_ID, "provisioningState": "Succeeded",
                "discoveryUrl": f"{self.url}/discovery/workspaces/{WORKSPACE_ID}",
                "mlFlowTrackingUri": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0{self.ws_id}",
                "storageAccount": f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                                  f"/providers/Microsoft.Storage/storageAccounts/{AZURITE_ACCOUNT}",
                "publicNetworkAccess": "Enabled", "hbiWorkspace": False, "v1LegacyMode": False,
            },
        }

    def _discovery(self) -> dict[str, Any]:
        return {"api": self.url, "catalog": self.url, "experimentation": self.url, "history": self.url,
                "hyperdrive": self.url, "labeling": self.url, "modelmanagement": self.url,
                "pipelines": self.url, "studio": "https://ml.azure.com"}

    # ------------------------------------------------------------------ datastores
    def _datastores(self, method: str, parts: list[str], query: dict[str, str]
                    ) -> tuple[int, Any, dict[str, str]] | None:
        with self.lock:
            if not parts and method == "GET":
                items = list(self.datastores.values())
                if query.get("isDefault") == "true":
                    items = [d for d in items if d["properties"]["isDefault"]]
                return 200, {"value": copy.deepcopy(items)}, {}
            name = parts[0]
            ds = self.datastores.get(name)
            if ds is None:
                return 404, arm_error("UserError", f"Datastore {name} does not exist."), {}
            if len(parts) == 1 and method == "GET":
                return 200, copy.deepcopy(ds), {}
            if parts[1:] == ["listSecrets"] and method == "POST":
                return 200, {"secretsType": "AccountKey", "key": self.account_key}, {}
        return None

    # ------------------------------------------------------------------ code versions
    def _code_resource(self, name: str, version: str, props: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{self.ws_id}/codes/{name}/versions/{version}", "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
            "properties": {"description": None, "tags": {}, "properties": {}, "isArchived": False,
                           "isAnonymous": False, **props, "provisioningState": "Succeeded"},
            "systemData": {"createdAt": _now(), "createdBy": "fake", "createdByType": "User",
                           "lastModifiedAt": _now()},
        }

    def _codes(self, method: str, parts: list[str], query: dict[str, str], body: Any
               ) -> tuple[int, Any, dict[str, str]] | None:
        if len(parts) == 2 and parts[1] == "versions" and method == "GET":
            with self.lock:
                items = [c for (n, _), c in self.codes.items() if n == parts[0]]
            if "hash" in query:  # the SDK's "already uploaded?" check for local code
                items = [c for c in items if c["properties"].get("properties", {}).get("hash") == query["hash"]]
            return 200, {"value": copy.deepcopy(items)}, {}
        if len(parts) != 3 or parts[1] != "versions":
            return None
        name, version = parts[0], parts[2]
        with self.lock:
            existing = self.codes.get((name, version))
            if method == "GET":
                if existing is None:
                    return 404, arm_error("UserError", f"Could not find asset with name {name} and version "
                                          f"{version} in the workspace."), {}
                return 200, copy.deepcopy(existing), {}
            if method == "PUT":
                props = dict(body["properties"])
                if existing is not None:
                    if existing["properties"].get("codeUri") != props.get("codeUri"):
                        return 400, arm_error("UserError", ASSET_PATH_ERROR), {}
                    existing["properties"].update({k: v for k, v in props.items() if k in ("description", "tags")})
                    return 200, copy.deepcopy(existing), {}
                resource = self._code_resource(name, version, props)
                self.codes[(name, version)] = resource
                return 201, copy.deepcopy(resource), {}
        return None

    # ------------------------------------------------------------------ computes
    def _computes(self, method: str, parts: list[str]) -> tuple[int, Any, dict[str, str]] | None:
        if len(parts) != 1 or method != "GET":
            return None
        with self.lock:
            compute = self.computes.get(parts[0])
        if compute is None:
            return 404, arm_error("ResourceNotFound", f"The Resource 'Microsoft.MachineLearningServices/workspaces/"
                                  f"{self.workspace}/computes/{parts[0]}' under resource group "
                                  f"'{self.resource_group}' was not found."), {}
        return 200, copy.deepcopy(compute), {}

    # ------------------------------------------------------------------ jobs
    def _jobs(self, method: str, parts: list[str], query: dict[str, str], body: Any
              ) -> tuple[int, Any, dict[str, str]] | None:
        if not parts and method == "GET":
            with self.lock:
                jobs = list(self.jobs.values())
            tag = query.get("tag")
            if tag:
                key, _, value = tag.partition("=")
                jobs = [j for j in jobs if key in (j.resource["properties"].get("tags") or {})
                        and (not value or j.resource["properties"]["tags"][key] == value)]
            return 200, {"value": [self._job_view(j) for j in jobs]}, {}
        if not parts:
            return None
        name = parts[0]
        if len(parts) == 1 and method == "PUT":
            return self._put_job(name, body)
        with self.lock:
            job = self.jobs.get(name)
        if job is None:
            # issue Azure/azureml-previews#267 shows the service's wording for an unknown job
            return 404, arm_error("UserError", f"Job {name} not found."), {}
        if len(parts) == 1 and method == "GET":
            with self.lock:
                job.gets += 1
                if job.step < len(job.script) - 1 and job.status not in TERMINAL:
                    job.step += 1
            self._side_effects(job)
            return 200, self._job_view(job), {}
        if parts[1:] == ["cancel"] and method == "POST":
            with self.lock:
                if job.status not in TERMINAL:
                    job.script = job.script[: job.step + 1] + ["CancelRequested"]
                    job.step = len(job.script) - 1
            location = (f"{self.url}/subscriptions/{self.subscription}{_PROVIDER}/locations/{self.location}"
                        f"/mfeOperationResults/jc:{WORKSPACE_ID}:{name}?api-version={query.get('api-version', '')}")
            return 202, None, {"Location": location, "Retry-After": self.retry_after}
        return None

    def _put_job(self, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        props = body["properties"]
        with self.lock:
            existing = self.jobs.get(name)
            if existing is not None:
                old = existing.submitted["properties"]
                changed = sorted(k for k in set(old) | set(props)
                                 if k not in _JOB_MUTABLE and old.get(k) != props.get(k))
                if changed:
                    names = ",  ".join(k[0].upper() + k[1:] for k in changed)
                    return 400, arm_error("UserError", JOB_EXISTS.format(fields=names), {
                        "code": "Immutable", "innerError": {"code": "JobPropertyImmutable"}}), {}
                rp = existing.resource["properties"]
                for k in ("description", "tags", "displayName", "isArchived"):
                    if k in props:
                        rp[k] = props[k]
                rp["properties"] = {**(rp.get("properties") or {}), **(props.get("properties") or {})}
                return 200, self._job_view(existing), {}
            missing = self._missing_references(props)
            if missing:
                return 400, arm_error("UserError", missing), {}
            script, error = self.scripts.pop(name, (list(self.default_script), None))
            job = FakeJob(name=name, submitted=copy.deepcopy(body), resource=self._new_job_resource(name, body),
                          script=script, error=error)
            self.jobs[name] = job
        return 201, self._job_view(job), {}

    def _missing_references(self, props: dict[str, Any]) -> str | None:
        """The service refuses a job whose code version or compute does not exist in the workspace (the wording
        here is the fake's own)."""
        code_id = props.get("codeId") or (props.get("trial") or {}).get("codeId")  # a sweep job's is its trial's
        code = re.match(r"^/subscriptions/.+/workspaces/[^/]+/codes/([^/]+)/versions/([^/]+)$",
                        code_id or "", re.IGNORECASE)
        if code and (code.group(1), code.group(2)) not in self.codes:
            return f"Code asset {code.group(1)}:{code.group(2)} was not found in workspace {self.workspace}."
        compute = re.match(r"^/subscriptions/.+/workspaces/[^/]+/computes/([^/]+)$", props.get("computeId") or "",
                           re.IGNORECASE)
        if compute and compute.group(1) not in self.computes:
            return f"Compute {compute.group(1)} was not found in workspace {self.workspace}."
        return None

    def _new_job_resource(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        props = copy.deepcopy(body["properties"])
        outputs = props.get("outputs") or {}
        for out_name, out in outputs.items():
            if out and not out.get("uri") and out.get("jobOutputType") in ("uri_folder", "uri_file",
                                                                              "mlflow_model", "custom_model"):
                # the service's default output location on the default datastore
                out["uri"] = f"azureml://datastores/workspaceblobstore/paths/azureml/{name}/{out_name}/"
            if out and out.get("uri"):
                out["uri"] = out["uri"].replace("${{name}}", name)
        outputs["default"] = {"jobOutputType": "uri_folder", "mode": "ReadWriteMount",
                              "uri": f"azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.{name}"}
        props["outputs"] = outputs
        props.setdefault("experimentName", "Default")
        props.setdefault("displayName", name)
        props["services"] = {
            "Tracking": {"jobServiceType": "Tracking", "endpoint":
                         f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0{self.ws_id}?"},
            "Studio": {"jobServiceType": "Studio", "endpoint":
                       f"https://ml.azure.com/runs/{name}?wsid={self.ws_id}"},
        }
        return {
            "id": f"{self.ws_id}/jobs/{name}", "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs", "properties": props,
            "systemData": {"createdAt": _now(), "createdBy": "Fake User", "createdByType": "User"},
        }

    def _job_view(self, job: FakeJob) -> dict[str, Any]:
        with self.lock:
            view = copy.deepcopy(job.resource)
            view["properties"]["status"] = job.status
        return view

    def _operation_result(self, op: str) -> tuple[int, Any, dict[str, str]]:
        name = op.split(":", 1)[1] if ":" in op else op
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                return 404, arm_error("UserError", f"Job {name} not found."), {}
            if job.status == "CancelRequested":
                job.script[-1] = "Canceled"
        self._side_effects(job)
        return 200, None, {}

    # ------------------------------------------------------------------ run history (data plane)
    def _history(self, method: str, rest: str) -> tuple[int, Any, dict[str, str]] | None:
        m = _WS.match(rest)
        if not m or method != "GET":
            return None
        parts = [p for p in (m.group(4) or "").split("/") if p]
        if len(parts) < 2 or parts[0] not in ("runs",):
            return None
        name = parts[1]
        with self.lock:
            job = self.jobs.get(name)
        if job is None:
            return 404, {"error": {"code": "UserError", "message": f"Run {name} was not found"}}, {}
        if parts[2:] == ["children"]:  # run history's get_child: a PaginatedRunList
            with self.lock:
                children = list(self.trials.get(name, []))
            return 200, {"value": [{**self._run_details(c), "parentRunId": name, "rootRunId": name}
                                   for c in children], "continuationToken": None, "nextLink": None}, {}
        if parts[2:] not in ([], ["details"]):
            return None
        return 200, self._run_details(job), {}

    def _run_details(self, job: FakeJob) -> dict[str, Any]:
        with self.lock:
            props = job.resource["properties"]
            details: dict[str, Any] = {
                "runId": job.name, "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, job.name)),
                "status": job.status, "target": (props.get("computeId") or "").rsplit("/", 1)[-1] or None,
                "properties": dict(props.get("properties") or {}), "tags": dict(props.get("tags") or {}),
                "logFiles": {}, "inputDatasets": [], "outputDatasets": [],
            }
            if job.status in TERMINAL:
                details["endTimeUtc"] = _now()
            if job.error and job.status == "Failed":
                details["error"] = {"error": {"code": job.error["code"], "message": job.error["message"],
                                              "messageFormat": "", "details": []}}
            for blob in job.logs_written:
                details["logFiles"][blob.split(f"dcid.{job.name}/", 1)[1]] = (
                    f"{self.blob_endpoint}/{ARTIFACT_CONTAINER}/{blob}" if self.blob_endpoint else blob)
        return details


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A JWT (alg none) the SDK can decode without verifying: azure-ai-ml reads `aud` (user identity jobs) and
    `tid` (studio URL) from the access token."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
