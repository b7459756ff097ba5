"""The Amazon SageMaker launcher: plan (see `request.py`), then submit, status, logs and cancel.

`submit()` consumes the Plan only: content-addressed uploads (HEAD first), then one
`create_training_job`, idempotent for the plan's job name. boto3 is imported lazily; clients may be
passed in (tests bind them to a loopback emulator).
"""

from __future__ import annotations

import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.plan import Plan
from cloudtune.spec import AwsSettings
from cloudtune_aws.request import (  # noqa: F401  (re-exported: the contract's constants)
    BOOTSTRAP,
    CAPABILITIES,
    CHECKPOINT_DIR,
    CODE_CHANNEL,
    LOG_GROUP,
    TENSORBOARD_DIR,
    compile_plan,
)

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.spec import JobSpec

INSTALL_HINT = "pip install 'cloudtune[aws]'"
PROGRESS_BYTES = 8 * 1000 * 1000

_THROTTLE_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "TransactionInProgressException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException",
}


def console_url(region: str, job_name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


class AwsLauncher:
    name = "aws"
    capabilities = CAPABILITIES
    settings_model = AwsSettings

    def __init__(self, session: Any = None, sagemaker_client: Any = None, s3_client: Any = None, logs_client: Any = None,
                 *, max_attempts: int = 8, backoff_s: float = 0.5, poll_s: float = 5.0, home: Path | None = None) -> None:
        self._session = session
        self._sm = sagemaker_client
        self._s3 = s3_client
        self._logs = logs_client
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_s = backoff_s
        self.poll_s = poll_s
        self._home = home
        self.last_uploaded_bytes = 0

    def plan(self, spec: "JobSpec", settings: AwsSettings, *, suffix: str, bundle: "Bundle | None" = None) -> Plan:
        """Compile the spec (pure, offline): see `cloudtune_aws.request`."""
        return compile_plan(spec, settings, suffix=suffix, bundle=bundle, home=self._home)

    # ================================================================ clients (lazy)
    @staticmethod
    def _boto3() -> Any:
        try:
            import boto3
        except ImportError:
            raise InvalidInput("the aws launcher needs boto3, which is not installed", fix=INSTALL_HINT) from None
        return boto3

    def _client(self, attr: str, service: str, region: str | None) -> Any:
        client = getattr(self, attr)
        if client is None:
            boto3 = self._boto3()
            from botocore.config import Config

            if self._session is None:
                self._session = boto3.session.Session(region_name=region)
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
            client = self._session.client(service, region_name=region or self._session.region_name, config=config)
            setattr(self, attr, client)
        return client

    def sagemaker(self, region: str | None = None) -> Any:
        return self._client("_sm", "sagemaker", region)

    def s3(self, region: str | None = None) -> Any:
        return self._client("_s3", "s3", region)

    def cloudwatch_logs(self, region: str | None = None) -> Any:
        return self._client("_logs", "logs", region)

    # ================================================================ retries
    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

        if isinstance(exc, (HTTPClientError, BotoConnectionError)):
            return True
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return err.get("Code") in _THROTTLE_CODES or int(status) >= 500
        return False

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff_s * min(2 ** attempt, 16) * (0.5 + random.random() / 2))

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """One API call, retried (bounded) on throttling, 5xx and dropped connections."""
        for attempt in range(self.max_attempts):
            try:
                return fn(**kwargs)
            except Exception as exc:
                if attempt + 1 >= self.max_attempts or not self._retryable(exc):
                    raise
                self._sleep(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # ================================================================ submit
    @staticmethod
    def _region_of(plan: Plan) -> str | None:
        return ((plan.spec.get("providers") or {}).get("aws") or {}).get("region")

    def submit(self, plan: Plan) -> JobRef:
        region = self._region_of(plan)
        self.last_uploaded_bytes = self._upload_all(plan, region)
        arn = self._create(plan.request, region)
        return self._ref(plan.job_name, arn, region, plan.model_uri, uploaded=self.last_uploaded_bytes)

    def _ref(self, job_name: str, arn: str, region: str | None, model_uri: str | None, uploaded: int = 0) -> JobRef:
        region = region or (arn.split(":")[3] if arn.count(":") >= 5 else None) or "us-east-1"
        return JobRef(provider="aws", job_id=job_name, native_id=arn, console_url=console_url(region, job_name),
                      model_uri=model_uri, extra={"region": region, "job_name": job_name, "uploaded_bytes": uploaded})

    def _exists(self, s3: Any, bucket: str, key: str, size: int) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self._call(s3.head_object, Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return int(head.get("ContentLength", -1)) == size

    def _upload_all(self, plan: Plan, region: str | None) -> int:
        s3 = self.s3(region)
        total = 0
        for up in plan.uploads:
            src = Path(up.source)
            if not src.exists():
                raise InvalidInput(f"{up.source} is gone since the plan was made", fix="plan and launch again")
            if src.is_dir():
                bucket, prefix = split_s3(up.destination)
                for f in sorted(p for p in src.rglob("*") if p.is_file()):
                    total += self._upload_file(s3, f, bucket, prefix + f.relative_to(src).as_posix(), None)
            else:
                bucket, key = split_s3(up.destination)
                total += self._upload_file(s3, src, bucket, key, up.sha256)
        if total:
            print(f"[cloudtune] uploaded {total} bytes", file=sys.stderr)
        return total

    def _upload_file(self, s3: Any, path: Path, bucket: str, key: str, sha256: str | None) -> int:
        from botocore.exceptions import ClientError

        size = path.stat().st_size
        try:
            if self._exists(s3, bucket, key, size):
                return 0
            extra = {"Metadata": {"sha256": sha256}} if sha256 else {}
            if size > PROGRESS_BYTES:
                self._call(s3.upload_file, Filename=str(path), Bucket=bucket, Key=key, ExtraArgs=extra or None,
                           Callback=_Progress(f"s3://{bucket}/{key}", size))
            else:
                data = path.read_bytes()
                self._call(s3.put_object, Bucket=bucket, Key=key, Body=data, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise InvalidInput(f"S3 bucket {bucket!r} does not exist", fix="create it, or set providers.aws.bucket to an existing bucket") from None
            raise
        return size

    def _create(self, request: dict[str, Any], region: str | None) -> str:
        """create_training_job once. A retry that finds the job (ResourceInUse, or a lost response) adopts it
        when its described request matches ours; it never makes a second job."""
        from botocore.exceptions import ClientError

        sm = self.sagemaker(region)
        name = request["TrainingJobName"]
        for attempt in range(self.max_attempts):
            try:
                return sm.create_training_job(**request)["TrainingJobArn"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("ResourceInUse", "ResourceInUseException"):
                    return self._adopt(sm, request, self._describe(sm, name))
                if not self._retryable(exc) or attempt + 1 >= self.max_attempts:
                    raise
            except Exception as exc:
                if not self._retryable(exc) or attempt + 1 >= self.max_attempts:
                    raise
            # the call may have reached SageMaker and only its answer been lost: look before trying again
            described = self._describe(sm, name)
            if described is not None:
                return self._adopt(sm, request, described)
            self._sleep(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe(self, sm: Any, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self._call(sm.describe_training_job, TrainingJobName=name)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") in ("ValidationException", "ResourceNotFound") and (
                    "not find" in err.get("Message", "") or "not found" in err.get("Message", "").lower()
                    or err.get("Code") == "ResourceNotFound"):
                return None
            raise

    @staticmethod
    def _matches(request: dict[str, Any], described: dict[str, Any]) -> bool:
        def channels(d: dict[str, Any]) -> list[tuple[str, str]]:
            return sorted((c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"]) for c in d.get("InputDataConfig", []))

        checks = [
            (request.get("HyperParameters"), described.get("HyperParameters")),
            (request["RoleArn"], described.get("RoleArn")),
            (request["AlgorithmSpecification"]["TrainingImage"], described.get("AlgorithmSpecification", {}).get("TrainingImage")),
            (request["ResourceConfig"]["InstanceType"], described.get("ResourceConfig", {}).get("InstanceType")),
            (request["ResourceConfig"]["InstanceCount"], described.get("ResourceConfig", {}).get("InstanceCount")),
            (channels(request), channels(described)),
        ]
        return all(a == b for a, b in checks)

    def _adopt(self, sm: Any, request: dict[str, Any], described: dict[str, Any] | None) -> str:
        name = request["TrainingJobName"]
        if described is None:
            raise InvalidInput(f"SageMaker says training job {name} exists but cannot describe it", fix="retry the launch")
        if not self._matches(request, described):
            raise InvalidInput(f"a different SageMaker training job named {name} already exists",
                               fix="launch again: a new launch draws a new name suffix")
        return described["TrainingJobArn"]

    # ================================================================ after submit
    @staticmethod
    def _name(ref: JobRef) -> str:
        return ref.extra.get("job_name") or ref.native_id.rsplit("/", 1)[-1]

    @staticmethod
    def _region(ref: JobRef) -> str | None:
        if ref.extra.get("region"):
            return ref.extra["region"]
        parts = ref.native_id.split(":")
        return parts[3] if len(parts) > 5 else None

    def status(self, ref: JobRef) -> JobStatus:
        sm = self.sagemaker(self._region(ref))
        d = self._call(sm.describe_training_job, TrainingJobName=self._name(ref))
        return map_status(d)

    def logs(self, ref: JobRef, follow: bool = False, *, max_polls: int | None = None) -> Iterator[str]:
        """Every log line of every stream `<job name>/...` in timestamp order; with `follow`, until the job ends."""
        from botocore.exceptions import ClientError

        region = self._region(ref)
        logs = self.cloudwatch_logs(region)
        name = self._name(ref)
        tokens: dict[str, str | None] = {}
        polls = 0
        finished = False
        while True:
            batch: list[tuple[int, int, str, str]] = []
            try:
                for stream in self._streams(logs, name):
                    tokens.setdefault(stream, None)
                for order, stream in enumerate(sorted(tokens)):
                    events, tokens[stream] = self._read_stream(logs, stream, tokens[stream])
                    batch += [(e["timestamp"], order, str(i), e["message"]) for i, e in enumerate(events)]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            batch.sort(key=lambda x: (x[0], x[1], int(x[2])))
            for _, _, _, message in batch:
                yield message.rstrip("\n")
            polls += 1
            if not follow or finished or (max_polls is not None and polls >= max_polls):
                return
            finished = self.status(ref).state in ("succeeded", "failed", "cancelled")  # one more drain after the end
            if not finished:
                time.sleep(self.poll_s)

    def _streams(self, logs: Any, name: str) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{name}/"}
        while True:
            page = self._call(logs.describe_log_streams, **kwargs)
            out += [s["logStreamName"] for s in page.get("logStreams", [])]
            if not page.get("nextToken"):
                return out
            kwargs["nextToken"] = page["nextToken"]

    def _read_stream(self, logs: Any, stream: str, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        events: list[dict[str, Any]] = []
        while True:
            kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if token:
                kwargs["nextToken"] = token
            page = self._call(logs.get_log_events, **kwargs)
            events += page.get("events", [])
            new = page.get("nextForwardToken")
            if not page.get("events") or new == token or new is None:
                return events, new or token
            token = new

    def cancel(self, ref: JobRef) -> None:
        from botocore.exceptions import ClientError

        sm = self.sagemaker(self._region(ref))
        try:
            self._call(sm.stop_training_job, TrainingJobName=self._name(ref))
        except ClientError as exc:
            err = exc.response.get("Error", {})
            # stopping a job that already ended is not an error for `cloudtune cancel`
            if err.get("Code") == "ValidationException" and re.search(r"(already|status|Completed|Failed|Stopped)", err.get("Message", "")):
                return
            raise


_PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage", "Restarting", "Interrupted"}


def map_status(d: dict[str, Any]) -> JobStatus:
    """DescribeTrainingJob -> JobStatus (pending | running | succeeded | failed | cancelled)."""
    primary = d.get("TrainingJobStatus", "InProgress")
    secondary = d.get("SecondaryStatus", "")
    transitions = d.get("SecondaryStatusTransitions") or []
    message = transitions[-1].get("StatusMessage", "") if transitions else ""
    detail = f"{secondary}: {message}" if secondary and message else secondary
    reason = d.get("FailureReason")
    if primary == "Completed":
        return JobStatus("succeeded", detail)
    if primary == "Failed":
        return JobStatus("failed", detail, reason or "the training job failed (see its logs)")
    if primary == "Stopped":
        if secondary in ("MaxRuntimeExceeded", "MaxWaitTimeExceeded"):
            limit = "max_runtime" if secondary == "MaxRuntimeExceeded" else "the spot wait limit"
            return JobStatus("failed", detail, reason or f"{secondary}: the job ran past {limit}")
        return JobStatus("cancelled", detail, reason)
    if primary == "Stopping":
        return JobStatus("running", detail or "Stopping")
    if secondary in _PENDING_SECONDARY:
        return JobStatus("pending", detail)
    return JobStatus("running", detail)


class _Progress:
    """boto3 upload callback: a progress line on stderr every ~10%."""

    def __init__(self, what: str, size: int) -> None:
        self.what, self.size, self.done, self.shown = what, size, 0, -1

    def __call__(self, n: int) -> None:
        self.done += n
        tenth = int(10 * self.done / max(self.size, 1))
        if tenth != self.shown:
            self.shown = tenth
            print(f"[cloudtune] uploading {self.what}: {self.done / 1e6:.1f}/{self.size / 1e6:.1f} MB", file=sys.stderr, flush=True)
