"""Failure triage: why a failed job failed, from its exit, the service's own reason and the tail of its log, as one
line that names the fix. Pure: no SDK, no torch, no I/O; `classify` is a function of its four arguments.

Causes, in the order they are looked for (a root cause before its symptoms: a rank out of GPU memory makes the
others time out in their next collective, so `oom_gpu` is found before `collective_timeout`):

| cause                | retried | modelled on                                                                  |
|----------------------|---------|------------------------------------------------------------------------------|
| `bad_image`          | never   | SageMaker CannotPullContainerError, Vertex StartError / "Unable to pull image", Azure ImagePullBackOff, EnvironmentBuildFailed |
| `capacity_or_quota`  | never   | SageMaker ResourceLimitExceeded / CapacityError, Vertex quota metrics / "Resources are insufficient in region", Azure QuotaExceeded / AllocationFailed / OutOfQuota |
| `disk_full`          | never   | ENOSPC "No space left on device", EFBIG "File too large" (a file-size limit), EDQUOT, PyTorch's inline_container.cc write failure, SQLite "database or disk is full" |
| `oom_gpu`            | never   | PyTorch's CUDA/HIP OutOfMemoryError, XLA's HBM RESOURCE_EXHAUSTED              |
| `oom_host`           | never   | exit 137 / SIGKILL, "Killed", DataLoader worker killed, Python MemoryError, SageMaker OutOfMemoryError, Vertex "ran out-of-memory" |
| `diverged`           | never   | the health checks' `[cloudtune] error: training diverged` / `[cloudtune] health:` lines, exit 66 or class `diverged` |
| `data_error`         | never   | cloudtune's own `[cloudtune] error:` lines (JobInputError), UnicodeDecodeError, a missing file under an input dir, exit 65 or class `input` |
| `max_runtime`        | never   | SageMaker MaxRuntimeExceeded, Vertex JOB_STATE_EXPIRED, the local supervisor's MaxRuntimeExceeded (before `preempted`: the stop at the limit is a SIGTERM) |
| `preempted`          | yes     | Azure PreemptionError, Vertex preemption, SageMaker spot interruption, SIGTERM / exit 143 or class `preempted` |
| `collective_timeout` | yes     | the NCCL watchdog's WorkNCCL timeout, DistBackendError, NCCL/gloo errors, rendezvous timeouts, exit 75 or class `infrastructure` |
| `unknown`            | (by exit class) | nothing above matched                                                |

"retried" is what `retries` does with the cause: `NEVER_RETRIED` is the set a fresh start cannot cure (the same
data, image, quota or memory fails the same way); cloudtune.local.supervisor reads it through `vetoes_retry`.
Each pattern carries the source it is modelled on (`Pattern.source`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

TAIL_LINES = 200  # how much of a log's end is read: the failure is at the end, and reading stays cheap
MAX_EVIDENCE = 160  # characters of the matched text shown in the line


class Cause(str, Enum):
    OOM_GPU = "oom_gpu"
    OOM_HOST = "oom_host"
    COLLECTIVE_TIMEOUT = "collective_timeout"
    PREEMPTED = "preempted"
    CAPACITY_OR_QUOTA = "capacity_or_quota"
    DATA_ERROR = "data_error"
    BAD_IMAGE = "bad_image"
    DIVERGED = "diverged"
    DISK_FULL = "disk_full"
    MAX_RUNTIME = "max_runtime"
    UNKNOWN = "unknown"


NEVER_RETRIED = frozenset({Cause.OOM_GPU, Cause.OOM_HOST, Cause.DATA_ERROR, Cause.BAD_IMAGE, Cause.DIVERGED,
                           Cause.CAPACITY_OR_QUOTA, Cause.DISK_FULL, Cause.MAX_RUNTIME})

TITLES: dict[Cause, str] = {
    Cause.OOM_GPU: "out of GPU memory",
    Cause.OOM_HOST: "host out of memory, killed",
    Cause.COLLECTIVE_TIMEOUT: "NCCL/collective timeout or a lost peer",
    Cause.PREEMPTED: "spot/preemptible capacity taken back",
    Cause.CAPACITY_OR_QUOTA: "no capacity or quota for this machine in the region",
    Cause.DATA_ERROR: "the job's data, model or options cannot be used",
    Cause.BAD_IMAGE: "the training image cannot be pulled or started",
    Cause.DIVERGED: "training diverged",
    Cause.DISK_FULL: "disk full",
    Cause.MAX_RUNTIME: "the job ran past resources.max_runtime",
    Cause.UNKNOWN: "cause not recognised",
}

FIXES: dict[Cause, str] = {
    Cause.OOM_GPU: "lower train.hyperparameters.batch_size or max_seq_len, set gradient_checkpointing: true, use "
                   "train.lora (with quantize: 4bit), or a larger resources.accelerator",
    Cause.OOM_HOST: "a machine with more RAM (resources.accelerator), fewer processes per node, or smaller "
                    "data/model loading (streamed data, a smaller model, lora quantize: 4bit)",
    Cause.COLLECTIVE_TIMEOUT: "look for the rank that failed or stalled first in `cloudtune logs`; if none did, "
                              "rerun (retries re-run this class) and check the nodes' network (NCCL_DEBUG=INFO)",
    Cause.PREEMPTED: "set retries (the job resumes from its newest checkpoint), or resources.spot: false",
    Cause.CAPACITY_OR_QUOTA: "request a quota increase for this machine type, or try another region or "
                             "resources.accelerator",
    Cause.DATA_ERROR: "fix the input the error names (`cloudtune validate --deep job.yaml` checks the first 5,000 "
                      "records of each input before you pay; a later record is checked only in the job)",
    Cause.BAD_IMAGE: "check the image name, tag and registry access (the job's role or service account must be able "
                     "to pull it), and that it was built for linux/amd64 with cloudtune in it",
    Cause.DIVERGED: "lower train.hyperparameters.learning_rate, add warmup_ratio, or use precision: bf16 instead of "
                    "fp16; resume from the last good checkpoint",
    Cause.DISK_FULL: "free space on that file system (fewer checkpoints: checkpoint.keep; old local jobs: `cloudtune "
                     "clean`), or give the job more disk (resources.disk_gb on a cloud; locally, CLOUDTUNE_HOME on a "
                     "larger disk); under a file-size limit (`ulimit -f`), raise it",
    Cause.MAX_RUNTIME: "raise resources.max_runtime, or continue the run from its newest checkpoint with `cloudtune "
                       "launch job.yaml --resume JOB` (a retry runs into the same limit)",
    Cause.UNKNOWN: "read the end of `cloudtune logs JOB`",
}



@dataclass(frozen=True)
class Pattern:
    """One message a failure prints. `where`: "service" (the cloud's failure reason), "log" or "any". `sure` is
    False for evidence that fits the cause but also a deliberate stop (a bare SIGKILL: the OOM killer, or a node
    taken away), which is never enough to stop a retry."""

    cause: Cause
    regex: re.Pattern[str]
    source: str
    where: str = "any"
    sure: bool = True


def _p(cause: Cause, regex: str, source: str, where: str = "any", flags: int = 0, sure: bool = True) -> Pattern:
    return Pattern(cause, re.compile(regex, flags), source, where, sure)


I = re.IGNORECASE
PATTERNS: tuple[Pattern, ...] = (
    # -- bad image ------------------------------------------------------------------------------------------------
    _p(Cause.BAD_IMAGE, r"CannotPullContainerError[^\n]*", "SageMaker/ECS CannotPullContainerError"),
    _p(Cause.BAD_IMAGE, r"(?:Unable|Failed) to pull (?:the )?image[^\n]*",
       "Vertex AI 'Unable to pull image'; kubelet/Azure ML 'Failed to pull image'", flags=I),
    _p(Cause.BAD_IMAGE, r"\b(?:ImagePullBackOff|ErrImagePull)\b[^\n]*", "Kubernetes pod status (Azure ML, Vertex)"),
    _p(Cause.BAD_IMAGE, r"Image [^\n]{0,200}? (?:not found|does not exist)[^\n]*",
       "Vertex AI / SageMaker: image not found", flags=I),
    _p(Cause.BAD_IMAGE, r"Termination reason: StartError[^\n]*",
       "Vertex AI replica StartError (github.com/GoogleCloudPlatform/vertex-ai-samples/issues/1898)"),
    _p(Cause.BAD_IMAGE, r"(?:EnvironmentBuildFailed|Failed building the Environment)[^\n]*",
       "Azure ML environment build (github.com/Azure/azure-cli/issues/23608)"),
    _p(Cause.BAD_IMAGE, r"Run docker command to pull (?:public )?image failed[^\n]*",
       "Azure ML (github.com/MicrosoftDocs/azure-docs/issues/71215)"),
    _p(Cause.BAD_IMAGE, r"exec format error|executable file not found in \$PATH[^\n]*",
       "runc: wrong platform or missing entrypoint"),
    _p(Cause.BAD_IMAGE, r"No module named '(?:cloudtune|torch|transformers)'",
       "an image without cloudtune's runtime", "log"),
    _p(Cause.BAD_IMAGE, r"\[cloudtune\] error: container contract:[^\n]*",
       "cloudtune-run: the container was not set up as the cloud's contract says", "log"),
    # -- capacity or quota ----------------------------------------------------------------------------------------
    _p(Cause.CAPACITY_OR_QUOTA, r"The account-level service limit '[^']+' is \d+ Instances[^\n]*",
       "SageMaker ResourceLimitExceeded (github.com/zenml-io/zenml/issues/847)"),
    _p(Cause.CAPACITY_OR_QUOTA, r"ResourceLimitExceeded[^\n]*", "SageMaker ResourceLimitExceeded"),
    _p(Cause.CAPACITY_OR_QUOTA, r"CapacityError: [^\n]*|Unable to provision requested ML compute capacity[^\n]*",
       "SageMaker CapacityError (github.com/DIAGNijmegen/rse-grand-challenge/issues/2631)"),
    _p(Cause.CAPACITY_OR_QUOTA,
       r"(?:EC2)?Insufficient(?:Instance)?CapacityError?[^\n]*|InsufficientInstanceCapacity[^\n]*",
       "EC2/SageMaker insufficient capacity (github.com/aws/amazon-sagemaker-feedback/issues/99)"),
    _p(Cause.CAPACITY_OR_QUOTA, r"The following quota metrics exceed quota limits: \S+",
       "Vertex AI RESOURCE_EXHAUSTED (github.com/GoogleCloudPlatform/vertex-ai-samples/issues/700)"),
    _p(Cause.CAPACITY_OR_QUOTA, r"Resources are insufficient in region[^\n]*",
       "Vertex AI stockout (github.com/openreview/openreview-expertise/issues/401)", flags=I),
    _p(Cause.CAPACITY_OR_QUOTA,
       r"Quota failure for project[^\n]*|ZONE_RESOURCE_POOL_EXHAUSTED[^\n]*|GCE_STOCKOUT[^\n]*"
       r"|does not have enough resources available to fulfill the request[^\n]*",
       "Google Cloud quota and stockout errors"),
    _p(Cause.CAPACITY_OR_QUOTA,
       r"Operation could not be completed as it results in exceeding approved [^\n]*quota[^\n]*",
       "Azure QuotaExceeded (github.com/scylladb/scylla-cluster-tests/issues/12948)"),
    _p(Cause.CAPACITY_OR_QUOTA,
       r"\b(?:QuotaExceeded|OutOfQuota|AllocationFailed|ZonalAllocationFailed|SkuNotAvailable)\b[^\n]*",
       "Azure ML / Azure Compute error codes (github.com/MicrosoftDocs/azure-docs/issues/121466)"),
    _p(Cause.CAPACITY_OR_QUOTA, r"subscription has a total vCPU quota of \d+[^\n]*",
       "Azure ML compute quota (github.com/microsoft/InnerEye-DeepLearning/issues/253)"),
    # -- disk full -----------------------------------------------------------------------------------------------
    _p(Cause.DISK_FULL, r"(?<=DiskFull: )(?:disk full|file-size limit \(ulimit -f\) of \d+ bytes reached) on [^\n]*? bytes free",
       "cloudtune local supervisor's failure reason"),
    _p(Cause.DISK_FULL, r"[^\n]{0,120}(?:\[Errno (?:28|27|122)\]|No space left on device|Disk quota exceeded"
       r"|File too large)[^\n]*", "POSIX ENOSPC, EFBIG (RLIMIT_FSIZE) and EDQUOT as Python and coreutils print them"),
    _p(Cause.DISK_FULL, r"\[enforce fail at inline_container\.cc:\d+\][^\n]*",
       "PyTorch's zip writer (caffe2/serialize/inline_container.cc): torch.save cannot write its file"),
    _p(Cause.DISK_FULL, r"database or disk is full[^\n]*", "SQLite SQLITE_FULL"),
    # -- out of GPU memory ----------------------------------------------------------------------------------------
    _p(Cause.OOM_GPU, r"(?:CUDA|HIP) out of memory\.?(?: Tried to allocate [\d.]+ [KMGT]iB)?",
       "PyTorch CUDACachingAllocator (github.com/pytorch/pytorch/issues/16417)"),
    _p(Cause.OOM_GPU, r"torch(?:\.cuda)?\.OutOfMemoryError[^\n]*",
       "PyTorch torch.OutOfMemoryError / torch.cuda.OutOfMemoryError"),
    _p(Cause.OOM_GPU, r"CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation",
       "CUDA runtime and cuBLAS allocation failures"),
    _p(Cause.OOM_GPU,
       r"RESOURCE_EXHAUSTED[^\n]*(?:Ran out of memory in memory space hbm|HBM)[^\n]*|Ran out of memory in memory space hbm[^\n]*",
       "XLA on TPU: HBM exhausted", flags=I),
    # -- host out of memory ---------------------------------------------------------------------------------------
    _p(Cause.OOM_HOST, r"DataLoader worker \(pid[^)]*\) is killed by signal: Killed\.?",
       "PyTorch DataLoader (torch/utils/data/_utils/signal_handling.py)", sure=False),
    _p(Cause.OOM_HOST, r"Out of memory: Killed process \d+[^\n]*|\bOOMKilled\b|killed by (?:the )?OOM(?: killer)?",
       "Linux OOM killer; Kubernetes OOMKilled (Azure ML, Vertex)", flags=I),
    _p(Cause.OOM_HOST, r"\bran out[- ]of[- ]memory and exited[^\n]*",
       "Vertex AI / AI Platform replica message (github.com/tensorflow/models/issues/5591)"),
    _p(Cause.OOM_HOST,
       r"OutOfMemoryError: Please use an instance type with more memory[^\n]*|(?<![.\w])OutOfMemoryError\b[^\n]*",
       "SageMaker FailureReason OutOfMemoryError", "service"),
    _p(Cause.OOM_HOST, r"(?<![\w.])MemoryError\b[^\n]*|Unable to allocate [\d.]+ [KMGT]iB for an array[^\n]*",
       "Python MemoryError; NumPy _ArrayMemoryError", "log"),
    _p(Cause.OOM_HOST, r"Signal 9 \(SIGKILL\) received by PID \d+|exitcode\s*:\s*-9\b[^\n]*",
       "torchrun ChildFailedError summary (torch.distributed.elastic)", "log", sure=False),
    _p(Cause.OOM_HOST, r"(?m)^(?:\[[\w.-]+\] )?(?:\S+: line \d+: +\d+ )?Killed(?: {2,}\S[^\n]*)?$",
       "a shell's report of a SIGKILLed child", "log", sure=False),
    # -- diverged -------------------------------------------------------------------------------------------------
    _p(Cause.DIVERGED, r"\[cloudtune\] error: training diverged[^\n]*", "cloudtune health checks (issue 9)", "log"),
    _p(Cause.DIVERGED, r"\[cloudtune\] health:[^\n]*diverg[^\n]*", "cloudtune health checks (issue 9)", "log", I),
    # -- data error -----------------------------------------------------------------------------------------------
    _p(Cause.DATA_ERROR,
       r"\[cloudtune\] error: (?![A-Z]\w*(?:Error|Exception|Interrupt|Exit)\b)(?!container contract:)(?!training diverged)[^\n]+",
       "cloudtune-run: a JobInputError (data, model, options)", "log"),
    _p(Cause.DATA_ERROR, r"UnicodeDecodeError: '[\w-]+' codec can't decode byte[^\n]*",
       "Python codecs: data not in the expected encoding"),
    _p(Cause.DATA_ERROR,
       r"FileNotFoundError: [^\n]*(?:/opt/ml/input/data/|/gcs/|/INPUT_|/mnt/azureml/|/input/data/)[^\n]*",
       "a missing file under a cloud's input mount (SageMaker /opt/ml/input/data, Vertex /gcs, Azure ML INPUT_*)"),
    _p(Cause.DATA_ERROR, r"pyarrow\.lib\.ArrowInvalid[^\n]*|datasets\.exceptions\.DatasetGenerationError[^\n]*",
       "Hugging Face Datasets / Arrow parse errors"),
    # -- ran out of time (before preempted: the stop at the limit is a SIGTERM, whose save line the log shows) --------
    _p(Cause.MAX_RUNTIME, r"MaxRuntimeExceeded[^\n]*",
       "SageMaker SecondaryStatus MaxRuntimeExceeded (StoppingCondition.MaxRuntimeInSeconds); cloudtune's local "
       "supervisor", "service"),
    _p(Cause.MAX_RUNTIME, r"the job ran past max_runtime[^\n]*",
       "Vertex AI JOB_STATE_EXPIRED (scheduling.timeout), as cloudtune_gcp reports it", "service"),
    # -- preempted ------------------------------------------------------------------------------------------------
    _p(Cause.PREEMPTED, r"PreemptionError[^\n]*|\bJobPreempted\b[^\n]*|(?<!exit class: )\bpre-?empt(?:ed|ion)\b[^\n]*",
       "Azure ML PreemptionError (github.com/Azure/MachineLearningNotebooks/issues/1242); Vertex AI Spot VM preemption",
       flags=I),
    _p(Cause.PREEMPTED, r"\bspot (?:instance )?interruption[^\n]*|MaxWaitTimeExceeded[^\n]*|\bInterrupted\b[^\n]*",
       "SageMaker managed spot training (SecondaryStatus Interrupted, MaxWaitTimeExceeded)", "service", I),
    _p(Cause.PREEMPTED, r"killed by SIGTERM", "cloudtune local supervisor's failure reason"),
    _p(Cause.PREEMPTED, r"SIGTERM received: checkpoint saved at step \d+[^\n]*",
       "cloudtune recipes (cloudtune/contracts/logfmt.py)", "log"),
    # -- collective timeout ---------------------------------------------------------------------------------------
    _p(Cause.COLLECTIVE_TIMEOUT,
       r"Watchdog caught collective operation timeout: WorkNCCL\([^)]*\)(?: ran for \d+ milliseconds before timing out\.?)?",
       "ProcessGroupNCCL watchdog (github.com/pytorch/pytorch/issues/118369)"),
    _p(Cause.COLLECTIVE_TIMEOUT,
       r"\b(?:DistBackendError|DistNetworkError|DistStoreError|RendezvousTimeoutError|RendezvousClosedError)\b[^\n]*",
       "torch.distributed exception types"),
    _p(Cause.COLLECTIVE_TIMEOUT,
       r"\bnccl(?:SystemError|InternalError|RemoteError|UnhandledCudaError)\b[^\n]*|NCCL error[^\n]*",
       "NCCL result codes"),
    _p(Cause.COLLECTIVE_TIMEOUT,
       r"Timed out after \d+ seconds waiting for clients[^\n]*|gloo[^\n]*Connection closed by peer[^\n]*",
       "c10d TCPStore; gloo transport"),
)

# exit codes that say the cause by themselves (POSIX 128+signal; cloudtune's classes in cloudtune/runtime/exitcodes.py)
EXIT_CAUSES: dict[int, Cause] = {
    137: Cause.OOM_HOST, -9: Cause.OOM_HOST,  # SIGKILL: on a training host most often the OOM killer
    143: Cause.PREEMPTED, -15: Cause.PREEMPTED,  # SIGTERM: the node was stopped from outside
    65: Cause.DATA_ERROR, 66: Cause.DIVERGED, 75: Cause.COLLECTIVE_TIMEOUT,
}
# the exit class cloudtune's failure reasons end with (cloudtune/runtime/exitcodes.py), when nothing else says more
TAG_CAUSES: dict[str, Cause] = {"input": Cause.DATA_ERROR, "diverged": Cause.DIVERGED,
                                "infrastructure": Cause.COLLECTIVE_TIMEOUT, "preempted": Cause.PREEMPTED}
_TAG = re.compile(r"\[exit class: (\w+)")
_EXIT_IN_TEXT = re.compile(r"(?:non-zero status of|exit(?:ed with)? code:?|ExitCode:?|exit status)\s*(-?\d+)", I)
_SIGKILL = re.compile(r"killed by SIGKILL|\(SIGKILL\)")
_SECRET = re.compile(r"(\?)[^\s'\"]*|\b((?:sig|token|key|secret|password|passwd|credential)s?=)[^\s&'\"]+", I)


@dataclass(frozen=True)
class Triage:
    """A failed job's cause, the one line `status` shows (what happened, the evidence, the fix) and the fix alone.

    `line` always contains `fix`. `source` names what the matched pattern is modelled on (None for unknown)."""

    cause: Cause
    line: str
    fix: str
    source: str | None = None
    evidence: str | None = None  # the matched text, redacted, as the line shows it

    @property
    def retried(self) -> bool:
        """Whether a fresh start can cure this cause (False for every cause in NEVER_RETRIED)."""
        return self.cause not in NEVER_RETRIED

    def for_job(self, job_id: str) -> "Triage":
        """The same triage with the `JOB` placeholder of its fix replaced by the job's id."""
        fix = self.fix.replace("JOB", job_id)
        return Triage(self.cause, self.line.replace(self.fix, fix), fix, self.source, self.evidence)

    def to_dict(self) -> dict[str, str]:
        """The JSON form `status --json` shows under `cause`: cause, line, fix."""
        return {"cause": self.cause.value, "line": self.line, "fix": self.fix}


def fix_for(cause: Cause, fixes: Mapping[Cause, str]) -> str:
    """The fix for a cause: the launcher's own words (its `triage_fixes`: its quotas, registries and settings) where
    it has them, else cloudtune's."""
    return fixes.get(cause, FIXES[cause])


def redact(text: str) -> str:
    """`text` on one line, at most MAX_EVIDENCE characters, without what could be a credential: URL query strings
    (an Azure SAS or a signed URL) and `sig=`, `token=`, `key=`, `secret=`, `password=` values."""
    flat = " ".join(text.split())
    flat = _SECRET.sub(lambda m: "?..." if m.group(1) else m.group(2) + "...", flat)
    return flat if len(flat) <= MAX_EVIDENCE else flat[:MAX_EVIDENCE - 3] + "..."


def tail(lines: Iterable[str], n: int = TAIL_LINES) -> str:
    """The last `n` lines of an iterable of log lines, as one text (reads the iterable once, keeps only n lines)."""
    from collections import deque

    return "\n".join(line.rstrip("\n") for line in deque(lines, maxlen=n))


def _search(text: str, where: str) -> tuple[Pattern, str] | None:
    """The first pattern, in PATTERNS order, that matches `text` (found where `where` says), with its match.

    Within one pattern the last match in the text wins: the end of a log is nearest to the failure."""
    for pattern in PATTERNS:
        if pattern.where not in ("any", where):
            continue
        found = list(pattern.regex.finditer(text))
        if found:
            return pattern, found[-1].group(0)
    return None


def exit_code_in(text: str) -> int | None:
    """The exit code a service's failure message states ("... non-zero status of 137", "exit code: 1",
    "killed by SIGKILL"); a SIGKILL is reported as -9. None when it states none."""
    if _SIGKILL.search(text):
        return -9
    found = _EXIT_IN_TEXT.findall(text)
    return int(found[-1]) if found else None


def _make(cause: Cause, fixes: Mapping[Cause, str], evidence: str | None, source: str | None) -> Triage:
    fix = fix_for(cause, fixes)
    said = redact(evidence) if evidence else None
    shown = f" ({said})" if said else ""
    return Triage(cause, f"{TITLES[cause]}{shown}; to fix: {fix}", fix, source, said)


def classify(exit_code: int | None, log_tail: str, fixes: Mapping[Cause, str], service_reason: str | None) -> Triage:
    """Why a job failed. The service's failure reason (the cloud's own words) and the log tail are searched; of what
    they show, the cause earliest in PATTERNS wins. Without any evidence there, the exit code says it (`exit_code`,
    or one the reason states: 137/SIGKILL, 143/SIGTERM, 65, 66, 75), then the exit class the reason is tagged with.
    Total: never raises; `unknown` when nothing matches, which includes a healthy log. `fixes` are the launcher's
    own words for a cause's fix (its `triage_fixes`; {} for cloudtune's)."""
    reason = service_reason or ""
    hits = [h for h in (_search(reason, "service"), _search(log_tail or "", "log")) if h is not None]
    if hits:  # the cause earliest in PATTERNS order wins: a root cause before its symptoms
        pattern, evidence = min(hits, key=lambda h: PATTERNS.index(h[0]))
        return _make(pattern.cause, fixes, evidence, pattern.source)
    code = exit_code if exit_code not in (None, 0, 1) else exit_code_in(reason)
    if code is not None and code in EXIT_CAUSES:
        said = f"exit {code}" if code > 0 else f"killed by signal {-code}"
        if EXIT_CAUSES[code] is Cause.OOM_HOST:
            said += ": most likely the kernel's OOM killer"
        return _make(EXIT_CAUSES[code], fixes, said, "POSIX exit status 128+signal; cloudtune/runtime/exitcodes.py")
    tag = _TAG.search(reason)
    if tag and tag.group(1) in TAG_CAUSES:
        return _make(TAG_CAUSES[tag.group(1)], fixes, f"exit class {tag.group(1)}", "cloudtune/runtime/exitcodes.py")
    return _make(Cause.UNKNOWN, fixes, None, None)


def vetoes_retry(log_tail: str) -> Triage | None:
    """The triage of an attempt's log when it shows a cause that a retry cannot cure (NEVER_RETRIED), else None.

    Only what the log says counts, never the exit code alone: a bare SIGKILL stays the retried `preempted` exit
    class (a node taken away), while a "CUDA out of memory" or a bad data line stops the retries."""
    found = _search(log_tail, "log")
    if found is None or found[0].cause not in NEVER_RETRIED or not found[0].sure:
        return None
    return _make(found[0].cause, {}, found[1], found[0].source)  # the local supervisor: cloudtune's own fixes
