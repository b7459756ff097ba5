"""The Amazon SageMaker launcher: plan (see `request.py`), then submit, status, logs and cancel.

A thin user of `cloudtune.kit`: `submit()` stages and uploads what is missing (content-addressed, over the S3
object store below), then makes one `create_training_job`, idempotent for the plan's job name. Every call runs
under the kit's one retry policy (botocore's own retries are switched off) and its errors become one line.
boto3 is imported lazily; clients may be passed in (tests bind them to a loopback emulator).
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput
from cloudtune.kit.base import CloudLauncher, import_sdk
from cloudtune.kit.cost import epoch_seconds, spot_saving
from cloudtune.kit.objectstore import upload_all
from cloudtune.kit.retry import Caller, CloudError, ErrorInfo, RetryPolicy
from cloudtune.kit.states import SAGEMAKER, map_native
from cloudtune.kit.triage import Cause
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.plan import Plan
from cloudtune.states import JobState
from cloudtune_aws.request import (  # noqa: F401  (re-exported: the contract's constants)
    BOOTSTRAP,
    CAPABILITIES,
    CHECKPOINT_DIR,
    CODE_CHANNEL,
    LOG_GROUP,
    TENSORBOARD_DIR,
    compile_plan,
)
from cloudtune_aws import tuning
from cloudtune_aws.settings import AwsSettings
from cloudtune_aws.tuningjobs import SWEEP_KIND, TuningJobs, is_tuning, resolve_channels

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.spec import JobSpec

# The fixes of a failed job's causes in SageMaker's words (cloudtune.kit.triage; the others are cloudtune's)
TRIAGE_FIXES: dict[Cause, str] = {
    Cause.CAPACITY_OR_QUOTA: ("request an increase of the SageMaker quota '<instance type> for training job "
                              "usage' in Service Quotas, or try another providers.aws.region or "
                              "resources.accelerator"),
    Cause.BAD_IMAGE: ("check the ECR image URI and tag and that the SageMaker execution role may pull it "
                      "(ecr:BatchGetImage), and that it was built for linux/amd64"),
}

_THROTTLE_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "TransactionInProgressException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable", "RequestTimeout",
    "RequestTimeoutException",
}
_CONFIG_CODES = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
                 "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "NoSuchBucket", "AuthFailure"}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "ResourceNotFound", "ResourceNotFoundException"}


def console_url(region: str, job_name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def classify(exc: BaseException) -> ErrorInfo | None:
    """botocore's exceptions -> the kit's error kinds (see cloudtune.kit.retry)."""
    from botocore import exceptions as bx
    from botocore.exceptions import (
        ClientError, ConnectionError as BotoConnectionError, HTTPClientError, NoCredentialsError, NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ErrorInfo("config", str(exc), "configure AWS credentials (aws configure, AWS_PROFILE or an instance role)")
    if isinstance(exc, (NoRegionError, bx.InvalidRegionError, bx.UnknownRegionError)):
        return ErrorInfo("config", str(exc), "set providers.aws.region or AWS_REGION to a region such as us-east-1")
    if isinstance(exc, bx.ProfileNotFound):
        return ErrorInfo("config", str(exc), "set AWS_PROFILE to a profile of ~/.aws/config (aws configure list-profiles), or unset it")
    if isinstance(exc, (bx.SSOError, bx.TokenRetrievalError, bx.UnauthorizedSSOTokenError)):
        return ErrorInfo("config", str(exc), "sign in again: aws sso login" + _profile_hint())
    if isinstance(exc, (bx.CredentialRetrievalError, bx.UnknownCredentialError)):
        return ErrorInfo("config", str(exc), "check the credential source of your AWS profile (credential_process, "
                         "role_arn, sso_*) in ~/.aws/config")
    if isinstance(exc, (HTTPClientError, BotoConnectionError)):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url") or "")
        return ErrorInfo("transient", f"cannot reach the endpoint ({exc})",
                         "check the network (and AWS_ENDPOINT_URL if set), then launch again",
                         service=_service_of_host(url),
                         endpoint=_origin(url) if isinstance(exc, BotoConnectionError) else "")
    if isinstance(exc, bx.BotoCoreError) and not isinstance(exc, ClientError):  # anything else botocore refuses
        return ErrorInfo("fatal", f"{type(exc).__name__}: {exc}", "see the message; the request is printed by "
                         "`cloudtune launch --dry-run`")
    if not isinstance(exc, ClientError):
        from boto3.exceptions import S3UploadFailedError

        cause = exc.__context__  # boto3's S3UploadFailedError is raised while handling the ClientError
        if isinstance(exc, S3UploadFailedError) and isinstance(cause, (ClientError, HTTPClientError, BotoConnectionError)):
            return classify(cause)
        return None
    info = _classify_client_error(exc)
    return replace(info, service=_SERVICE_OF.get(getattr(exc, "operation_name", ""), ""))


# operations whose errors name their own service rather than SageMaker
_SERVICE_OF = {**{op: "S3" for op in ("ListObjectsV2", "HeadObject", "PutObject", "GetObject", "CreateMultipartUpload",
                                      "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload")},
               **{op: "CloudWatch Logs" for op in ("DescribeLogStreams", "GetLogEvents", "FilterLogEvents")}}


def _classify_client_error(exc: Any) -> ErrorInfo:
    """A botocore ClientError (the service answered) -> the kit's error kinds."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"{code}: {err.get('Message') or 'no message'}".replace("\n", " ")
    if code in ("ResourceInUse", "ResourceInUseException"):
        return ErrorInfo("conflict", message)
    if code in _NOT_FOUND or (code == "ValidationException" and re.search(r"(?i)not (be )?found|not find", message)):
        return ErrorInfo("not_found", message, "check the job name (cloudtune list)")
    if code in _THROTTLE_CODES or status >= 500:
        return ErrorInfo("transient", message, "the service is failing or throttling: try again in a few minutes")
    if code == "NoSuchBucket":
        return ErrorInfo("config", message, "check providers.aws.bucket and the s3:// URIs in the spec, or create the bucket")
    if code in _CONFIG_CODES or status in (401, 403):
        return ErrorInfo("config", message, "check the credentials' IAM permissions and providers.aws (docs/providers/aws.md: IAM)")
    return ErrorInfo("fatal", message, "see the message; the request is printed by `cloudtune launch --dry-run`")


def _service_of_host(url: str) -> str:
    """S3 or CloudWatch Logs for their AWS endpoints (logs.REGION.amazonaws.com, s3..., BUCKET.s3...); else ""."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return ""
    labels = host.split(".")
    if "logs" in labels[:2]:
        return "CloudWatch Logs"
    if any(label == "s3" or label.startswith("s3-") for label in labels):
        return "S3"
    return ""


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""


def _profile_hint() -> str:
    import os

    profile = os.environ.get("AWS_PROFILE")
    return f" --profile {profile}" if profile else ""


class S3Store:
    """The kit's object store on S3."""

    scheme = "s3"

    def __init__(self, client: Any) -> None:
        self._s3 = client

    def exists(self, bucket: str, key: str) -> bool:
        # a list, not a HEAD: its errors carry S3's message (a HEAD answer has no body), and a missing key is
        # "not there" under s3:ListBucket alone (a HEAD without s3:GetObject answers 403)
        return self.list_keys(bucket, key, 1) == [key]

    def list_keys(self, bucket: str, prefix: str, limit: int) -> list[str]:
        page = self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit)
        return [o["Key"] for o in page.get("Contents", [])][:limit]

    def put(self, bucket: str, key: str, path: Path, progress: Any) -> None:
        if progress is None:  # small: one PutObject
            self._s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        else:  # large: boto3's managed (multipart) transfer, reporting progress
            self._s3.upload_file(Filename=str(path), Bucket=bucket, Key=key, Callback=progress)

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self._s3.list_objects_v2(**kwargs)
            out += [(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", [])]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def get(self, bucket: str, key: str, path: Path, progress: Any) -> str | None:
        """One GetObject, streamed to `path`; the ETag is returned as the MD5 only where S3 makes it one."""
        answer = self._s3.get_object(Bucket=bucket, Key=key)
        with open(path, "wb") as fh:
            for chunk in answer["Body"].iter_chunks(1 << 20):
                fh.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        return etag_md5(answer)


def etag_md5(answer: dict[str, Any]) -> str | None:
    """The MD5 an S3 answer states: its ETag when the object was stored in one part (no `-N` suffix) without KMS or
    customer-key encryption (for those, S3's ETag is not the MD5 of the bytes); else None."""
    etag = str(answer.get("ETag") or "").strip('"').lower()
    plain = answer.get("ServerSideEncryption") in (None, "AES256") and not answer.get("SSECustomerAlgorithm")
    return etag if plain and re.fullmatch(r"[0-9a-f]{32}", etag) else None


class AwsLauncher(TuningJobs, CloudLauncher):
    name = "aws"
    service = "SageMaker"
    capabilities = CAPABILITIES
    settings_model = AwsSettings
    triage_fixes = TRIAGE_FIXES
    compile = staticmethod(tuning.compile_plan)  # a training job, or a tuning job for a spec with a sweep

    def __init__(self, session: Any = None, sagemaker_client: Any = None, s3_client: Any = None, logs_client: Any = None,
                 *, policy: RetryPolicy | None = None, poll_s: float = 5.0, home: Path | None = None,
                 lock_dir: Path | None = None) -> None:
        super().__init__(classify, policy=policy, poll_s=poll_s, home=home, lock_dir=lock_dir)
        # S3 and CloudWatch Logs calls name their own service, whatever the endpoint (an S3 failure is not SageMaker's)
        self.s3_caller = Caller("S3", classify, self.caller.policy)
        self.logs_caller = Caller("CloudWatch Logs", classify, self.caller.policy)
        self._session = session
        self._sm = sagemaker_client
        self._s3 = s3_client
        self._logs = logs_client

    # ================================================================ clients (lazy)
    def _client(self, attr: str, service: str, region: str | None) -> Any:
        client = getattr(self, attr)
        if client is None:
            boto3 = import_sdk("aws", "boto3", "boto3, which is not installed")
            from botocore.config import Config

            if self._session is None:
                self._session = boto3.session.Session(region_name=region)
            # one retry policy: the kit's (botocore's own retries off, so they never nest)
            config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60)
            client = self._session.client(service, region_name=region or self._session.region_name, config=config)
            setattr(self, attr, client)
        return client

    def sagemaker(self, region: str | None = None) -> Any:
        return self._client("_sm", "sagemaker", region)

    def s3(self, region: str | None = None) -> Any:
        return self._client("_s3", "s3", region)

    def cloudwatch_logs(self, region: str | None = None) -> Any:
        return self._client("_logs", "logs", region)

    # ================================================================ submit
    @staticmethod
    def _region_of(plan: Plan) -> str | None:
        return ((plan.spec.get("providers") or {}).get("aws") or {}).get("region")

    def submit(self, plan: Plan) -> JobRef:
        region = self._region_of(plan)
        store = S3Store(self.s3(region))
        if is_tuning(plan.request):  # a sweep: cloudtune_aws.tuningjobs
            return self.submit_sweep(plan, store, region)
        # before any upload: a wrong URI costs nothing
        request = resolve_channels(plan, store, self.s3_caller.call)
        self.last_uploaded_bytes = upload_all(plan.uploads, store, self.s3_caller.call)
        arn = self._create(request, region)
        return self._plan_ref(plan, arn, self.last_uploaded_bytes)

    def _plan_ref(self, plan: Plan, arn: str, uploaded: int = 0) -> JobRef:
        ref = self._ref(plan.job_name, arn, self._region_of(plan), plan.model_uri, uploaded=uploaded)
        checkpoints = (plan.request.get("CheckpointConfig") or {}).get("S3Uri")
        return replace(ref, extra={**ref.extra, "checkpoint_uri": checkpoints}) if checkpoints else ref

    def resume(self, plan: Plan, earlier: JobRef) -> Plan:
        """`plan` made to start from `earlier`'s newest checkpoint: its CheckpointConfig S3 URI is the earlier job's,
        which SageMaker copies into /opt/ml/checkpoints before the job starts (the runtime resumes from the newest
        complete checkpoint there)."""
        uri = str(earlier.extra.get("checkpoint_uri") or self._checkpoint_uri(earlier))
        request = copy.deepcopy(plan.request)
        request["CheckpointConfig"]["S3Uri"] = uri
        return replace(plan, request=request, notes=(*plan.notes, f"resumes from {earlier.job_id}'s newest checkpoint "
                                                                   f"(CheckpointConfig {uri})"))

    def find(self, plan: Plan) -> JobRef | None:
        """The training job `plan` made, looked up by its name (DescribeTrainingJob); None when SageMaker has none."""
        if is_tuning(plan.request):
            return self.find_sweep(plan, self._region_of(plan))
        sm = self.sagemaker(self._region_of(plan))
        described = self.caller.call(sm.describe_training_job, TrainingJobName=plan.job_name, missing_ok=True,
                                     what="look up the training job")
        return None if described is None else self._plan_ref(plan, described["TrainingJobArn"])

    def _ref(self, job_name: str, arn: str, region: str | None, model_uri: str | None, uploaded: int = 0) -> JobRef:
        region = region or (arn.split(":")[3] if arn.count(":") >= 5 else None) or "us-east-1"
        return JobRef(provider="aws", job_id=job_name, native_id=arn, console_url=console_url(region, job_name),
                      model_uri=model_uri, extra={"region": region, "job_name": job_name, "uploaded_bytes": uploaded})

    def _create(self, request: dict[str, Any], region: str | None) -> str:
        """create_training_job once; a retry that finds the job (a conflict, or a lost answer) adopts it when its
        described request matches ours, and never makes a second job."""
        sm = self.sagemaker(region)
        name = request["TrainingJobName"]

        def find() -> str | None:
            described = self.caller.call(sm.describe_training_job, TrainingJobName=name, missing_ok=True,
                                         what="describe the training job")
            return None if described is None else self._adopt(request, described)

        return self.caller.create_once(lambda: sm.create_training_job(**request)["TrainingJobArn"], find,
                                       what="create the training job")

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

    def _adopt(self, request: dict[str, Any], described: dict[str, Any]) -> str:
        if not self._matches(request, described):
            raise InvalidInput(f"a different SageMaker training job named {request['TrainingJobName']} already exists",
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
        if ref.extra.get("kind") == SWEEP_KIND:
            return self.sweep_status(ref)
        sm = self.sagemaker(self._region(ref))
        d = self.caller.call(sm.describe_training_job, TrainingJobName=self._name(ref), what="describe the training job")
        return map_status(d)

    def logs(self, ref: JobRef, follow: bool = False, *, max_polls: int | None = None) -> Iterator[str]:
        """Every log line of every stream `<job name>/...` in timestamp order; with `follow`, until the job ends. A
        sweep's: every stream of its trials (`<tuning job>-NNN-<id>/...`), each line led by its trial's job name."""
        logs = self.cloudwatch_logs(self._region(ref))
        name = self._name(ref)
        sweep = ref.extra.get("kind") == SWEEP_KIND
        tokens: dict[str, str | None] = {}

        def read() -> list[str]:
            batch: list[tuple[int, int, int, str]] = []
            for stream in self._streams(logs, f"{name}-" if sweep else f"{name}/"):
                tokens.setdefault(stream, None)
            for order, stream in enumerate(sorted(tokens)):
                events, tokens[stream] = self._read_stream(logs, stream, tokens[stream])
                label = f"[{stream.split('/', 1)[0]}] " if sweep else ""
                batch += [(e["timestamp"], order, i, label + e["message"]) for i, e in enumerate(events)]
            return [message.rstrip("\n") for *_, message in sorted(batch, key=lambda x: x[:3])]

        return self.follow(ref, read, follow, max_polls)

    def _streams(self, logs: Any, prefix: str) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": prefix}
        while True:
            page = self.logs_caller.call(logs.describe_log_streams, **kwargs, missing_ok=True, what="list the job's log streams")
            if page is None:  # the log group does not exist until a job has logged
                return out
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
            page = self.logs_caller.call(logs.get_log_events, **kwargs, what="read the job's log")
            events += page.get("events", [])
            new = page.get("nextForwardToken")
            if not page.get("events") or new == token or new is None:
                return events, new or token
            token = new

    def download(self, ref: JobRef, dest: Path, *, checkpoints: bool = False) -> Path:
        """SageMaker's model.tar.gz (`ref.model_uri`), fetched beside `dest` and unpacked into it with the kit's safe
        extraction; with `checkpoints`, every object under the job's CheckpointConfig S3 URI into dest/checkpoints
        (see `Launcher.download`)."""
        from cloudtune.data.archives import safe_extract  # off the dry run's start-up path
        from cloudtune.kit.download import download_checkpoints, download_prefix, model_uri_of, scratch_dir

        model_uri = model_uri_of(ref, f"see `cloudtune status {ref.job_id}`; download the job's output from S3 yourself")
        store = S3Store(self.s3(self._region(ref)))
        if model_uri.endswith(".tar.gz"):
            with scratch_dir(dest) as scratch:
                download_prefix(store, model_uri, scratch, self.s3_caller.call)
                safe_extract(scratch / model_uri.rsplit("/", 1)[-1], dest)
        else:  # a model folder (outputs written elsewhere by a custom container)
            download_prefix(store, model_uri, dest, self.s3_caller.call)
        if checkpoints:
            download_checkpoints(store, self.s3_caller.call, self._checkpoint_uri(ref).rstrip("/") + "/", dest)
        return dest

    def _checkpoint_uri(self, ref: JobRef) -> str:
        """Where the job's checkpoints are synced: recorded at submit, else derived from the model URI
        (`<output>/<job>/output/model.tar.gz` -> `<output>/checkpoints/<job>`, as the request module writes it)."""
        if ref.extra.get("checkpoint_uri"):
            return str(ref.extra["checkpoint_uri"])
        name = self._name(ref)
        tail = f"/{name}/output/model.tar.gz"
        if not (ref.model_uri or "").endswith(tail):
            raise InvalidInput(f"job {ref.job_id} has no checkpoint location recorded",
                               fix="download without --checkpoints, or copy them from S3 yourself")
        return f"{ref.model_uri[:-len(tail)]}/checkpoints/{name}"

    def cancel(self, ref: JobRef) -> None:
        if ref.extra.get("kind") == SWEEP_KIND:
            return self.cancel_sweep(ref)
        sm = self.sagemaker(self._region(ref))
        try:
            self.caller.call(sm.stop_training_job, TrainingJobName=self._name(ref), what="stop the training job")
        except CloudError as exc:
            # stopping a job that already ended is not an error for `cloudtune cancel`
            if not re.search(r"ValidationException: .*(already|status|Completed|Failed|Stopped)", exc.message):
                raise


_PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage", "Restarting", "Interrupted"}


def map_status(d: dict[str, Any]) -> JobStatus:
    """DescribeTrainingJob -> JobStatus: the primary status through the kit's SageMaker table, refined by the
    secondary status (still starting = pending; stopped for running out of time = failed)."""
    primary = d.get("TrainingJobStatus", "InProgress")
    secondary = d.get("SecondaryStatus", "")
    transitions = d.get("SecondaryStatusTransitions") or []
    message = transitions[-1].get("StatusMessage", "") if transitions else ""
    detail = f"{secondary}: {message}" if secondary and message else secondary
    reason = d.get("FailureReason")
    state = map_native(SAGEMAKER, primary)
    if state is JobState.CANCELLED and secondary in ("MaxRuntimeExceeded", "MaxWaitTimeExceeded"):
        limit = "max_runtime" if secondary == "MaxRuntimeExceeded" else "the spot wait limit"
        return JobStatus("failed", detail, reason or f"{secondary}: the job ran past {limit}", native=primary)
    if state is JobState.FAILED:
        reason = reason or "the training job failed (see its logs)"
    if state is JobState.RUNNING and primary == "InProgress" and secondary in _PENDING_SECONDARY:
        state = JobState.PENDING
    detail = detail or ("Stopping" if primary == "Stopping" else "")
    if d.get("EnableManagedSpotTraining") and state.terminal:
        saving = spot_saving(d.get("TrainingTimeInSeconds"), d.get("BillableTimeInSeconds"))
        detail = f"{detail}; {saving}" if saving and detail else (saving or detail)
    billable = d.get("BillableTimeInSeconds")
    return JobStatus(state.value, detail, reason, native=primary, started_at=epoch_seconds(d.get("TrainingStartTime")),
                     ended_at=epoch_seconds(d.get("TrainingEndTime")),
                     billable_s=float(billable) if isinstance(billable, (int, float)) and state.terminal else None)
