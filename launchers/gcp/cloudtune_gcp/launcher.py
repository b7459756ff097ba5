"""The Google Vertex AI launcher: plan (see `request.py`), then submit, status, logs and cancel.

A thin user of `cloudtune.kit`: `submit()` stages and uploads what is missing (content-addressed, over the GCS
object store below), then makes one `create_custom_job`. Vertex assigns job ids itself, so a retried create
first looks for the job this launch made, by its `cloudtune-launch` label, and adopts it. Every call runs under
the kit's retry policy (the SDK's own retries are switched off) and its errors become one line. The Google SDKs
are imported lazily; clients may be passed in (tests bind them to loopback fakes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts import vertex as vx
from cloudtune.errors import InvalidInput
from cloudtune.kit.base import CloudLauncher, import_sdk, table_status
from cloudtune.kit.cost import epoch_seconds
from cloudtune.kit.objectstore import resolve_input, upload_all
from cloudtune.kit.retry import Caller, CloudConfigError, ErrorInfo, RetryPolicy
from cloudtune.kit.states import VERTEX
from cloudtune.kit.triage import Cause
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.plan import Plan
from cloudtune_gcp import tuning
from cloudtune_gcp.request import CAPABILITIES, LAUNCH_LABEL
from cloudtune_gcp.settings import GcpSettings
from cloudtune_gcp.tuningjobs import SWEEP_KIND, TuningJobs, is_tuning, label_finder

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.spec import JobSpec

# The fixes of a failed job's causes in Vertex AI's words (cloudtune.kit.triage; the others are cloudtune's)
TRIAGE_FIXES: dict[Cause, str] = {
    Cause.CAPACITY_OR_QUOTA: ("request more of the quota metric named (IAM & Admin > Quotas, "
                              "aiplatform.googleapis.com/custom_model_training_...), or try another "
                              "providers.gcp.region or resources.accelerator"),
    Cause.BAD_IMAGE: ("check the Artifact Registry image and tag and that Vertex AI's service agent may pull "
                      "it (roles/artifactregistry.reader), and that it was built for linux/amd64"),
}
# Vertex AI and Cloud Logging at another endpoint (an emulator or a fake, e.g. http://127.0.0.1:8080), as
# AWS_ENDPOINT_URL does for boto3 and STORAGE_EMULATOR_HOST for Cloud Storage
ENDPOINT_VAR = "CLOUDTUNE_GCP_API_ENDPOINT"
CALL_TIMEOUT_S = 60.0


def console_url(project: str, region: str, job_id: str) -> str:
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/training/{job_id}/cpu?project={project}"


def classify(exc: BaseException) -> ErrorInfo | None:
    """google-api-core, google-auth and requests exceptions -> the kit's error kinds."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return ErrorInfo("config", str(exc).split("\n")[0], "run `gcloud auth application-default login`, or set "
                         "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")
    if isinstance(exc, auth_exc.TransportError):  # the token endpoint could not be reached
        return ErrorInfo("transient", f"cannot reach Google's sign-in endpoint ({_one_line(exc)})",
                         "check the network, then launch again")
    if isinstance(exc, auth_exc.RefreshError) and getattr(exc, "retryable", False):  # the token endpoint failed
        return ErrorInfo("transient", f"Google's sign-in endpoint failed: {_one_line(exc)}",
                         "the service is failing: try again in a few minutes")
    if isinstance(exc, auth_exc.RefreshError):  # expired or revoked credentials
        return ErrorInfo("config", f"the credentials were refused: {_one_line(exc)}",
                         "run `gcloud auth application-default login` again (or check the service-account key file)")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return ErrorInfo("config", _one_line(exc), "check your Google Cloud credentials (gcloud auth "
                         "application-default login, or GOOGLE_APPLICATION_CREDENTIALS)")
    if isinstance(exc, gexc.GoogleAPICallError):
        return replace(_classify_api_error(exc, gexc), service=_service_of(str(exc.message or exc)))
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with google-auth
        return None
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        url = getattr(getattr(exc, "request", None), "url", None) or ""
        where = f" {urlsplit(url).scheme}://{urlsplit(url).netloc}" if url else ""
        refused = _never_sent(exc)
        return ErrorInfo("transient", f"cannot reach the endpoint{where} ({type(exc).__name__})",
                         f"check the network (and {ENDPOINT_VAR} or STORAGE_EMULATOR_HOST if set), then launch again",
                         service=_service_of(url), endpoint=where.strip() if refused else "")
    return None


_METHOD_URL = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE|HEAD) \S+: ")


def _never_sent(exc: Any) -> bool:
    """Whether a requests error means the request never reached the service (a refused or timed-out connection),
    rather than an answer that was lost after it was sent (a dropped connection, a read timeout): only the former
    marks the endpoint unreachable, and only the latter may have created a job (kit.retry.Caller.create_once)."""
    import requests
    from urllib3 import exceptions as u3

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ReadTimeout) or not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", cause), (u3.NewConnectionError, u3.ConnectTimeoutError))


def _service_of(text: str) -> str:
    """The Google service a URL (or an error message that starts with one) belongs to, when not Vertex AI."""
    if "/storage/v1/" in text or "/upload/storage/" in text or "storage.googleapis.com" in text:
        return "Cloud Storage"
    if "/v2/entries" in text or "logging.googleapis.com" in text:
        return "Cloud Logging"
    return ""


def _classify_api_error(exc: Any, gexc: Any) -> ErrorInfo:
    """A google-api-core error (the service answered) -> the kit's error kinds, with the service's own message
    (the method and URL that google-cloud-storage puts before it are dropped)."""
    message = _METHOD_URL.sub("", " ".join(str(exc.message or exc).split()))
    if isinstance(exc, gexc.NotFound):
        return ErrorInfo("not_found", message, "check the job id (cloudtune list) and providers.gcp")
    if isinstance(exc, (gexc.AlreadyExists, gexc.Conflict)):
        return ErrorInfo("conflict", message)
    if isinstance(exc, (gexc.PermissionDenied, gexc.Unauthenticated, gexc.Forbidden, gexc.Unauthorized)):
        return ErrorInfo("config", f"{exc.code} {message}", "grant the roles listed in docs/providers/gcp.md (IAM) to "
                         "your account, and check providers.gcp.project")
    if isinstance(exc, (gexc.ServerError, gexc.TooManyRequests, gexc.DeadlineExceeded, gexc.ServiceUnavailable)):
        return ErrorInfo("transient", f"{exc.code} {message}" if getattr(exc, "code", None) else message,
                         "the service is failing or throttling: try again in a few minutes")
    return ErrorInfo("fatal", f"{exc.code} {message}", "see the message; `cloudtune launch --dry-run` prints the request")


def _no_bucket(bucket: str) -> CloudConfigError:
    return CloudConfigError(f"Cloud Storage: bucket gs://{bucket} does not exist (or is not visible to these credentials)",
                            fix="check providers.gcp.bucket and the gs:// URIs in the spec, or create the bucket")


class GcsStore:
    """The kit's object store on Cloud Storage."""

    scheme = "gs"

    def __init__(self, client: Any) -> None:
        self._gcs = client

    def exists(self, bucket: str, key: str) -> bool:
        return bool(self._gcs.bucket(bucket).blob(key).exists(retry=None, timeout=CALL_TIMEOUT_S))

    def list_keys(self, bucket: str, prefix: str, limit: int) -> list[str]:
        from google.api_core import exceptions as gexc

        try:
            blobs = self._gcs.list_blobs(bucket, prefix=prefix, max_results=limit, retry=None, timeout=CALL_TIMEOUT_S)
            return sorted(b.name for b in blobs)[:limit]
        except gexc.NotFound:  # listing a bucket finds no bucket
            raise _no_bucket(bucket) from None

    def put(self, bucket: str, key: str, path: Path, progress: Any) -> None:
        from google.api_core import exceptions as gexc

        blob = self._gcs.bucket(bucket).blob(key)
        try:
            blob.upload_from_filename(str(path), retry=None, timeout=CALL_TIMEOUT_S)
        except gexc.NotFound:  # an upload into a bucket that does not exist
            raise _no_bucket(bucket) from None
        if progress is not None:
            progress(path.stat().st_size)

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        from google.api_core import exceptions as gexc

        try:
            blobs = self._gcs.list_blobs(bucket, prefix=prefix, retry=None, timeout=CALL_TIMEOUT_S)
            return sorted((b.name, int(b.size or 0)) for b in blobs)
        except gexc.NotFound:
            raise _no_bucket(bucket) from None

    def get(self, bucket: str, key: str, path: Path, progress: Any) -> str | None:
        """One download to `path`; the MD5 the answer's X-Goog-Hash states (a composite object has none). The SDK's
        own checksum is off: the kit checks the MD5 of what was written."""
        blob = self._gcs.bucket(bucket).blob(key)
        blob.download_to_filename(str(path), retry=None, timeout=CALL_TIMEOUT_S, checksum=None)
        if progress is not None:
            progress(path.stat().st_size)
        return _md5_hex(blob.md5_hash)


def _md5_hex(value: str | None) -> str | None:
    """GCS's base64 md5Hash -> 32 hex digits (None when absent or malformed)."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(value or "", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


class GcpLauncher(TuningJobs, CloudLauncher):
    name = "gcp"
    service = "Vertex AI"
    capabilities = CAPABILITIES
    settings_model = GcpSettings
    triage_fixes = TRIAGE_FIXES
    compile = staticmethod(tuning.compile_plan)  # a CustomJob, or a tuning job for a spec with a sweep

    def __init__(self, job_client: Any = None, storage_client: Any = None, logging_client: Any = None, *,
                 credentials: Any = None, policy: RetryPolicy | None = None, poll_s: float = 10.0,
                 home: Path | None = None, lock_dir: Path | None = None) -> None:
        super().__init__(classify, policy=policy, poll_s=poll_s, home=home, lock_dir=lock_dir)
        # Cloud Storage and Cloud Logging calls name their own service (a GCS failure is not Vertex AI's)
        self.gcs_caller = Caller("Cloud Storage", classify, self.caller.policy)
        self.logging_caller = Caller("Cloud Logging", classify, self.caller.policy)
        self._jobs = job_client
        self._gcs = storage_client
        self._logging = logging_client
        self._credentials = credentials

    # ================================================================ clients (lazy)
    @staticmethod
    def _require_sdk() -> None:
        for module in ("google.cloud.aiplatform_v1", "google.cloud.storage"):
            import_sdk("gcp", module, "google-cloud-aiplatform and google-cloud-storage")

    def job_client(self, region: str) -> Any:
        if self._jobs is None:
            self._require_sdk()
            from google.api_core.client_options import ClientOptions
            from google.cloud import aiplatform_v1

            endpoint = os.environ.get(ENDPOINT_VAR)
            if endpoint:  # an emulator or a fake on this machine: REST, and anonymous unless credentials were given
                self._jobs = aiplatform_v1.JobServiceClient(credentials=self._credentials or _anonymous(), transport="rest",
                                                            client_options=ClientOptions(api_endpoint=endpoint))
            else:
                self._jobs = aiplatform_v1.JobServiceClient(
                    credentials=self._credentials, client_options=ClientOptions(api_endpoint=f"{region}-aiplatform.googleapis.com"))
        return self._jobs

    def storage_client(self, project: str) -> Any:
        if self._gcs is None:
            self._require_sdk()
            from google.cloud import storage

            self._gcs = storage.Client(project=project, credentials=self._credentials)
        return self._gcs

    def logging_client(self, project: str) -> Any:
        if self._logging is None:
            cloud_logging = import_sdk("gcp", "google.cloud.logging", "google-cloud-logging for `cloudtune logs`")
            endpoint = os.environ.get(ENDPOINT_VAR)
            if endpoint:
                self._logging = cloud_logging.Client(project=project, credentials=self._credentials or _anonymous(),
                                                     _use_grpc=False, client_options={"api_endpoint": endpoint})
            else:
                self._logging = cloud_logging.Client(project=project, credentials=self._credentials)
        return self._logging

    # ================================================================ submit
    def submit(self, plan: Plan) -> JobRef:
        settings = (plan.spec.get("providers") or {}).get("gcp") or {}
        project, region = settings["project"], settings["region"]
        store = GcsStore(self.storage_client(project))
        for uri in sorted(v for v in ((plan.spec.get("inputs") or {}).values()) if v.startswith("gs://")):
            # the /gcs mount reads a path, not a prefix: look it up only to refuse a missing or ambiguous input
            resolve_input(store, uri, self.gcs_caller.call, prefix_match=False)
        self.last_uploaded_bytes = upload_all(plan.uploads, store, self.gcs_caller.call)
        if is_tuning(plan.request):  # a sweep: cloudtune_gcp.tuningjobs
            ref = self.create_sweep(plan, region, LAUNCH_LABEL)
            return replace(ref, extra={**ref.extra, "uploaded_bytes": self.last_uploaded_bytes})
        return self._plan_ref(plan, self._create(plan, region), self.last_uploaded_bytes)

    @staticmethod
    def _plan_ref(plan: Plan, name: str, uploaded: int = 0) -> JobRef:
        settings = (plan.spec.get("providers") or {}).get("gcp") or {}
        project, region = settings["project"], settings["region"]
        return JobRef(provider="gcp", job_id=plan.job_name, native_id=name,
                      console_url=console_url(project, region, name.rsplit("/", 1)[-1]), model_uri=plan.model_uri,
                      extra={"project": project, "region": region, "job_name": plan.job_name, "uploaded_bytes": uploaded,
                             "checkpoint_uri": _checkpoint_dir(plan.request)})

    def resume(self, plan: Plan, earlier: JobRef) -> Plan:
        """`plan` made to start from `earlier`'s newest checkpoint: Vertex AI derives AIP_CHECKPOINT_DIR (and the model
        dir) from baseOutputDirectory, so the job writes under the earlier job's output directory, where the runtime
        resumes from the newest complete checkpoint. Refused for an earlier job that left a model (`api.launch`
        resumes only jobs that failed or were cancelled)."""
        import copy

        checkpoints = str(earlier.extra.get("checkpoint_uri") or "").rstrip("/")
        if not checkpoints.endswith("/checkpoints"):
            raise InvalidInput(f"job {earlier.job_id} has no Vertex AI checkpoint dir recorded",
                               fix="launch again without --resume")
        base = checkpoints[: -len("/checkpoints")]
        request = copy.deepcopy(plan.request)
        request["customJob"]["jobSpec"]["baseOutputDirectory"] = {"outputUriPrefix": base}
        return replace(plan, request=request, model_uri=vx.output_dirs(base)[vx.MODEL_DIR_VAR],
                       notes=(*plan.notes, f"resumes from {earlier.job_id}'s newest checkpoint (its output directory "
                                           f"{base}, which this job's model and checkpoints also go to)"))

    def find(self, plan: Plan) -> JobRef | None:
        """The custom job `plan` made, looked up by its launch label; None when Vertex AI has none."""
        region = ((plan.spec.get("providers") or {}).get("gcp") or {})["region"]
        if is_tuning(plan.request):
            return self.find_sweep(plan, region, LAUNCH_LABEL)
        name = self.caller.call(self._finder(plan, region), what="look up the custom job")
        return None if name is None else self._plan_ref(plan, name)

    def _finder(self, plan: Plan, region: str) -> Any:
        """A call that returns the resource name of the job labelled with `plan`'s launch label, or None."""
        return label_finder(self.job_client(region).list_custom_jobs, plan.request["parent"], LAUNCH_LABEL,
                            plan.request["customJob"]["labels"][LAUNCH_LABEL])

    def _create(self, plan: Plan, region: str) -> str:
        """create_custom_job once; a retry first adopts the job this launch made (found by its launch label)."""
        from google.cloud.aiplatform_v1 import CustomJob

        client, job = self.job_client(region), CustomJob.from_json(_json(plan.request["customJob"]))
        return self.caller.create_once(lambda: client.create_custom_job(
            parent=plan.request["parent"], custom_job=job, retry=None, timeout=CALL_TIMEOUT_S).name,
            self._finder(plan, region), what="create the custom job")

    # ================================================================ after submit
    @staticmethod
    def _where(ref: JobRef) -> tuple[str, str]:
        parts = ref.native_id.split("/")  # projects/P/locations/L/customJobs/ID
        return ref.extra.get("project") or parts[1], ref.extra.get("region") or parts[3]

    def status(self, ref: JobRef) -> JobStatus:
        if ref.extra.get("kind") == SWEEP_KIND:
            return self.sweep_status(ref)
        _, region = self._where(ref)
        client = self.job_client(region)
        job = self.caller.call(client.get_custom_job, name=ref.native_id, retry=None, timeout=CALL_TIMEOUT_S,
                               what="get the custom job")
        found = map_status(job.state.name, job.error.message if job.error and job.error.message else None)
        start, end = epoch_seconds(getattr(job, "start_time", None)), epoch_seconds(getattr(job, "end_time", None))
        billable = end - start if start is not None and end is not None and end >= start else None
        return replace(found, started_at=start, ended_at=end, billable_s=billable)  # Vertex bills start to end

    def download(self, ref: JobRef, dest: Path, *, checkpoints: bool = False) -> Path:
        """Every object under the job's AIP_MODEL_DIR (`ref.model_uri`, a gs:// folder) into `dest`; with
        `checkpoints`, those under its AIP_CHECKPOINT_DIR into dest/checkpoints (see `Launcher.download`)."""
        from cloudtune.kit.download import download_outputs, model_uri_of  # off the dry run's start-up path

        model_uri = model_uri_of(ref, f"see `cloudtune status {ref.job_id}`; copy the job's output from Cloud Storage "
                                      "yourself")
        uri = (ref.extra.get("checkpoint_uri") or _sibling(model_uri, "checkpoints")) if checkpoints else None
        return download_outputs(GcsStore(self.storage_client(self._where(ref)[0])), self.gcs_caller.call, model_uri,
                                dest, uri)

    def cancel(self, ref: JobRef) -> None:
        if ref.extra.get("kind") == SWEEP_KIND:
            return self.cancel_sweep(ref)
        _, region = self._where(ref)
        if self.status(ref).state.terminal:
            return  # cancelling a job that already ended is not an error for `cloudtune cancel`
        client = self.job_client(region)
        self.caller.call(client.cancel_custom_job, name=ref.native_id, retry=None, timeout=CALL_TIMEOUT_S,
                         what="cancel the custom job")

    def logs(self, ref: JobRef, follow: bool = False, *, max_polls: int | None = None) -> Iterator[str]:
        """The job's Cloud Logging entries (every replica), oldest first; with `follow`, until the job ends."""
        project, _ = self._where(ref)
        client = self.logging_client(project)
        job_id = ref.native_id.rsplit("/", 1)[-1]
        after = ""

        def read() -> list[str]:
            nonlocal after
            where = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
            if after:
                where += f' AND timestamp>"{after}"'
            entries = self.logging_caller.call(_list_entries, client, project, where, what="read the job's log")
            after = max([after, *(stamp for stamp, _ in entries)])
            return [text for _, text in entries]

        return self.follow(ref, read, follow, max_polls)

def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def _json(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body)


def _list_entries(client: Any, project: str, where: str) -> list[tuple[str, str]]:
    """(RFC 3339 timestamp, text) of every matching entry, oldest first."""
    from google.cloud.logging import ASCENDING

    out: list[tuple[str, str]] = []
    for entry in client.list_entries(resource_names=[f"projects/{project}"], filter_=where, order_by=ASCENDING, page_size=1000):
        payload = entry.payload
        text = payload if isinstance(payload, str) else (payload or {}).get("message", "") if isinstance(payload, dict) else str(payload)
        stamp = entry.timestamp.isoformat().replace("+00:00", "Z") if entry.timestamp else ""
        out.append((stamp, str(text).rstrip("\n")))
    return out


def _checkpoint_dir(request: dict[str, Any]) -> str | None:
    """The AIP_CHECKPOINT_DIR a CustomJob request gives its containers (from its baseOutputDirectory)."""
    base = ((request.get("customJob") or {}).get("jobSpec") or {}).get("baseOutputDirectory", {}).get("outputUriPrefix")
    return vx.output_dirs(base)[vx.CHECKPOINT_DIR_VAR] if base else None


def _sibling(model_uri: str, name: str) -> str:
    """`<base>/model/` -> `<base>/<name>/` (the AIP_* folders share their base output directory)."""
    return model_uri.rstrip("/").rsplit("/", 1)[0] + f"/{name}/"


def map_status(native: str, error: str | None) -> JobStatus:
    """A Vertex JobState name (and the job's error message) -> JobStatus, through the kit's Vertex table."""
    failed = ("the job ran past max_runtime or its wait limit" if native == "JOB_STATE_EXPIRED"
              else "the custom job failed (see its logs)")
    return table_status(VERTEX, native, native.removeprefix("JOB_STATE_").lower(), error or failed)
