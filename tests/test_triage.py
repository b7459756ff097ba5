"""Failure triage (cloudtune.kit.triage): each failure class from a log tail or failure reason modelled on what each
cloud and library really prints (the source of each is in the case's id and in the pattern it matches), one line
that names the fix, `unknown` for a healthy or unrecognised tail; retries never re-run a cause they cannot cure;
and `cloudtune status` (text and --json) shows the cause of a failed local job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudtune import api
from cloudtune.cli import main
from cloudtune.kit.triage import FIXES, NEVER_RETRIED, Cause, classify, redact, tail, vetoes_retry
from cloudtune.launcher import launcher_class

TORCH_OOM = """\
  File "/opt/conda/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 125, in forward
    return F.linear(input, self.weight, self.bias)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of \
which 1.12 GiB is free. Process 4051 has 77.97 GiB memory in use. Of the allocated memory 75.20 GiB is allocated by \
PyTorch, and 1.31 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting \
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  \
(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)
[cloudtune] error: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."""

OLD_TORCH_OOM = ("RuntimeError: CUDA out of memory. Tried to allocate 12.50 MiB (GPU 0; 10.92 GiB total capacity; "
                 "8.57 MiB already allocated; 9.28 GiB free; 4.68 MiB cached)")

NCCL_TIMEOUT = """\
[rank1]:[E1206 18:44:12.715298746 ProcessGroupNCCL.cpp:607] [Rank 1] Watchdog caught collective operation timeout: \
WorkNCCL(SeqNum=7753, OpType=ALLREDUCE, NumelIn=544997376, NumelOut=544997376, Timeout(ms)=1800000) ran for 1800061 \
milliseconds before timing out.
[rank1]:[E1206 18:44:12.715588844 ProcessGroupNCCL.cpp:1664] [PG 1 Rank 1] Exception (either an error or timeout) \
detected by watchdog at work: 7753, last enqueued NCCL work: 7755, last completed NCCL work: 7752.
[rank1]:[E1206 18:44:12.716 ProcessGroupNCCL.cpp:1709] [PG 1 Rank 1] To avoid data inconsistency, we are taking the \
entire process down."""

TORCHRUN_SIGKILL = """\
E1129 10:01:02.123000 140 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -9) local_rank: 0 \
(pid: 1234) of binary: /opt/conda/bin/python
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-29_10:01:02
  host      : algo-1
  rank      : 0 (local_rank: 0)
  exitcode  : -9 (pid: 1234)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 1234
============================================================"""

HEALTHY = """\
[cloudtune] provider=aws job=exp-1 node 1/1 model_dir=/opt/ml/model checkpoint_dir=/opt/ml/checkpoints
[cloudtune] step=10/100 epoch=0.10 loss=2.3104 lr=4.5e-04 tokens/s=5210 eta=0:03:10
[cloudtune] step=20/100 epoch=0.20 loss=2.0121 lr=4.0e-04 tokens/s=5302 eta=0:02:50"""

# (id: cloud and what it is modelled on, provider, exit code, the service's failure reason, log tail, cause)
CASES = [
    # out of GPU memory: PyTorch >= 2.5 prints the same text on every cloud; the older RuntimeError form too
    ("local-torch-oom", "local", 1, "AlgorithmError: OutOfMemoryError: CUDA out of memory. [exit class: error, not retried]", TORCH_OOM, Cause.OOM_GPU),
    ("aws-torch-oom", "aws", None, "AlgorithmError: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", TORCH_OOM, Cause.OOM_GPU),
    ("gcp-torch-oom", "gcp", None, "The replica workerpool0-0 exited with a non-zero status of 1.", TORCH_OOM, Cause.OOM_GPU),
    ("azure-old-runtimeerror", "azure", None, "Execution failed. User process 'python' exited with status code 1.", OLD_TORCH_OOM, Cause.OOM_GPU),
    ("tpu-xla-hbm", "gcp", None, None, "RuntimeError: RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 17.1G of 15.48G hbm.", Cause.OOM_GPU),
    # host out of memory: exit 137, SIGKILL, Killed, SageMaker/Vertex/Azure ML wording
    ("local-sigkill", "local", -9, "AlgorithmError: node algo-1 was killed by SIGKILL [exit class: preempted, retryable]", "[cloudtune] step=10/100 loss=2.1", Cause.OOM_HOST),
    ("aws-outofmemoryerror", "aws", None, "OutOfMemoryError: Please use an instance type with more memory, or reduce the size of job data processed on an instance.", "", Cause.OOM_HOST),
    ("aws-exit-137", "aws", None, "AlgorithmError: ExecuteUserScriptError: ExitCode 137 ErrorMessage \"\"", "", Cause.OOM_HOST),
    ("gcp-exit-137", "gcp", None, "The replica workerpool0-0 exited with a non-zero status of 137. To find out more about why your job exited please check the logs", "", Cause.OOM_HOST),
    ("gcp-ran-out-of-memory", "gcp", None, "The replica master 0 ran out-of-memory and exited with a non-zero status of 9(SIGKILL)", "", Cause.OOM_HOST),
    ("azure-oomkilled", "azure", None, "Process killed by OOM. Container exited with OOMKilled (exit code 137).", "", Cause.OOM_HOST),
    ("local-dataloader-killed", "local", 1, None, "RuntimeError: DataLoader worker (pid 2871) is killed by signal: Killed. ", Cause.OOM_HOST),
    ("local-shell-killed", "local", 137, None, "[cloudtune] running command in /tmp/code: bash run.sh\nrun.sh: line 3:  4242 Killed                  python train.py", Cause.OOM_HOST),
    ("torchrun-sigkill", "aws", None, "AlgorithmError: ExecuteUserScriptError", TORCHRUN_SIGKILL, Cause.OOM_HOST),
    ("python-memoryerror", "local", 1, None, "  File \"prep.py\", line 9, in <module>\n    rows = list(reader)\nMemoryError", Cause.OOM_HOST),
    # NCCL / collective timeout
    ("aws-nccl-watchdog", "aws", None, "AlgorithmError: ExecuteUserScriptError", NCCL_TIMEOUT, Cause.COLLECTIVE_TIMEOUT),
    ("gcp-distbackenderror", "gcp", None, "The replica workerpool1-0 exited with a non-zero status of 1.", "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5\nncclSystemError: System call (e.g. socket, malloc) or external library call failed or device error.", Cause.COLLECTIVE_TIMEOUT),
    ("azure-store-timeout", "azure", None, None, "torch.distributed.DistStoreError: Timed out after 901 seconds waiting for clients. 1/2 clients joined.", Cause.COLLECTIVE_TIMEOUT),
    ("local-exit-75", "local", 75, "AlgorithmError: exit code 75 [exit class: infrastructure, retryable]", "", Cause.COLLECTIVE_TIMEOUT),
    # spot preemption
    ("azure-preemptionerror", "azure", None, "AzureMLCompute job failed. PreemptionError: Nodes of this job got pre-empted. Check if the run has failed or restarted. Reason: Received pre-emption warning signal", "", Cause.PREEMPTED),
    ("azure-jobpreempted", "azure", None, "JobPreempted: the low priority node was preempted", "", Cause.PREEMPTED),
    ("gcp-spot-preempted", "gcp", None, "The job was preempted: Spot VM preempted", "", Cause.PREEMPTED),
    ("aws-max-wait", "aws", None, "MaxWaitTimeExceeded: the job ran past the spot wait limit", "", Cause.PREEMPTED),
    ("aws-interrupted", "aws", None, "Training job Interrupted: the managed spot instance was reclaimed", "", Cause.PREEMPTED),
    ("local-max-runtime", "local", 143, "MaxRuntimeExceeded: the job ran past resources.max_runtime",
     "[cloudtune] step=30/400 loss=2.1\n[cloudtune] SIGTERM received: checkpoint saved at step 30, exiting", Cause.MAX_RUNTIME),
    ("aws-max-runtime", "aws", None, "MaxRuntimeExceeded: the job ran past max_runtime", "[cloudtune] step=30/400 loss=2.1",
     Cause.MAX_RUNTIME),
    ("gcp-expired", "gcp", None, "the job ran past max_runtime or its wait limit", "", Cause.MAX_RUNTIME),
    ("local-sigterm", "local", -15, "AlgorithmError: node algo-1 was killed by SIGTERM [exit class: preempted, retryable]", "[cloudtune] SIGTERM received: checkpoint saved at step 40, exiting", Cause.PREEMPTED),
    # no capacity or quota
    ("aws-resourcelimit", "aws", None, "ResourceLimitExceeded: An error occurred (ResourceLimitExceeded) when calling the CreateTrainingJob operation: The account-level service limit 'ml.p4d.24xlarge for training job usage' is 0 Instances, with current utilization of 0 Instances and a request delta of 1 Instances. Please contact AWS support to request an increase for this limit.", "", Cause.CAPACITY_OR_QUOTA),
    ("aws-capacityerror", "aws", None, "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance type.", "", Cause.CAPACITY_OR_QUOTA),
    ("gcp-quota-metrics", "gcp", None, "The following quota metrics exceed quota limits: aiplatform.googleapis.com/custom_model_training_nvidia_a100_gpus", "", Cause.CAPACITY_OR_QUOTA),
    ("gcp-insufficient-region", "gcp", None, "Resources are insufficient in region: us-central1. Please try a different region.", "", Cause.CAPACITY_OR_QUOTA),
    ("azure-quotaexceeded", "azure", None, "QuotaExceeded: Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores quota. Additional details - Location: eastus, Current Limit: 0, Current Usage: 0, Additional Required: 24", "", Cause.CAPACITY_OR_QUOTA),
    ("azure-outofquota", "azure", None, "OutOfQuota: Not enough cluster CPU quota. The amount of additional CPU quota requested is 8, and you are currently using 14.", "", Cause.CAPACITY_OR_QUOTA),
    ("azure-allocationfailed", "azure", None, "AllocationFailed: Allocation failed. We do not have sufficient capacity for the requested VM size in this region.", "", Cause.CAPACITY_OR_QUOTA),
    # data error
    ("local-jobinputerror", "local", 65, "AlgorithmError: data/train.jsonl, line 3: invalid JSON: Expecting value [exit class: input, not retried]", "[cloudtune] error: data/train.jsonl, line 3: invalid JSON: Expecting value", Cause.DATA_ERROR),
    ("aws-jobinputerror", "aws", None, "AlgorithmError: data input s3://bucket/train/ holds no records", "[cloudtune] error: data input s3://bucket/train/ holds no records", Cause.DATA_ERROR),
    ("gcp-unicode", "gcp", None, "The replica workerpool0-0 exited with a non-zero status of 1.", "  File \"train.py\", line 12, in load\n    text = fh.read()\nUnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte", Cause.DATA_ERROR),
    ("aws-missing-input", "aws", None, None, "FileNotFoundError: [Errno 2] No such file or directory: '/opt/ml/input/data/train/train.jsonl'", Cause.DATA_ERROR),
    ("gcp-missing-input", "gcp", None, None, "FileNotFoundError: [Errno 2] No such file or directory: '/gcs/my-bucket/data/train.jsonl'", Cause.DATA_ERROR),
    ("azure-missing-input", "azure", None, None, "FileNotFoundError: [Errno 2] No such file or directory: '/mnt/azureml/cr/j/0a1b/cap/data-capability/wd/INPUT_train/train.jsonl'", Cause.DATA_ERROR),
    ("local-exit-65", "local", 65, None, "", Cause.DATA_ERROR),
    # bad image
    ("aws-cannotpull", "aws", None, "CannotPullContainerError: Error response from daemon: manifest for 123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune-gpu:0.9 not found: manifest unknown", "", Cause.BAD_IMAGE),
    ("gcp-unable-to-pull", "gcp", None, "Unable to pull image us-central1-docker.pkg.dev/my-project/cloudtune/cloudtune-gpu:0.9; Image us-central1-docker.pkg.dev/my-project/cloudtune/cloudtune-gpu:0.9 not found", "", Cause.BAD_IMAGE),
    ("gcp-starterror", "gcp", None, "The replica workerpool0-0 exited with a non-zero status of 128. Termination reason: StartError. Termination log message: failed to create containerd task", "", Cause.BAD_IMAGE),
    ("azure-imagepullbackoff", "azure", None, "ImagePullBackOff: Back-off pulling image \"mycloudtune.azurecr.io/cloudtune-gpu:0.9\"", "", Cause.BAD_IMAGE),
    ("azure-failed-to-pull", "azure", None, "Failed to pull image mycloudtune.azurecr.io/cloudtune-gpu:0.9: unauthorized: authentication required", "", Cause.BAD_IMAGE),
    ("azure-environment-build", "azure", None, "EnvironmentBuildFailed: Failed building the Environment.", "", Cause.BAD_IMAGE),
    ("local-contract", "local", 65, "ClientError: no resourceconfig.json [exit class: input, not retried]", "[cloudtune] error: container contract: /opt/ml/input/config/resourceconfig.json is missing", Cause.BAD_IMAGE),
    # diverged (the health checks' lines)
    ("local-diverged", "local", 66, "AlgorithmError: training diverged [exit class: diverged, not retried]", "[cloudtune] error: training diverged at step 120: loss is nan; last good checkpoint checkpoint-100", Cause.DIVERGED),
    ("aws-health-line", "aws", None, "AlgorithmError: ExecuteUserScriptError", "[cloudtune] health: divergence: loss inf at step 57 (recent range 1.9-2.4); stopping", Cause.DIVERGED),
    ("local-exit-66", "local", 66, None, "", Cause.DIVERGED),
    # disk full: ENOSPC from Python, coreutils and PyTorch's zip writer; EFBIG under a file-size limit
    ("aws-enospc", "aws", None, "AlgorithmError: OSError: [Errno 28] No space left on device: '/opt/ml/checkpoints/checkpoint-500/optimizer.pt'", "", Cause.DISK_FULL),
    ("gcp-inline-container", "gcp", None, "The replica workerpool0-0 exited with a non-zero status of 1.", "RuntimeError: [enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/12: file write failed", Cause.DISK_FULL),
    ("azure-cp-enospc", "azure", None, "Execution failed. User process 'bash' exited with status code 1.", "cp: error writing '/mnt/azureml/cr/j/out/model.safetensors': No space left on device", Cause.DISK_FULL),
    ("local-efbig", "local", 1, "DiskFull: file-size limit (ulimit -f) of 307200 bytes reached on /, 7268921600 bytes free ([enforce fail at inline_container.cc:672] . unexpected pos 292608 vs 292496); to fix: free space [exit class: error, not retried]", "", Cause.DISK_FULL),
]


def fixes_of(provider: str) -> dict[Cause, str]:
    """The launcher's own fixes (its `triage_fixes`), as `cloudtune.api.Job.triage` passes them."""
    return dict(getattr(launcher_class(provider), "triage_fixes", {}))


def test_the_clouds_word_their_quota_and_image_fixes() -> None:
    for provider in ("aws", "gcp", "azure"):
        assert set(fixes_of(provider)) == {Cause.CAPACITY_OR_QUOTA, Cause.BAD_IMAGE}
    assert fixes_of("local") == {}


@pytest.mark.parametrize("provider,exit_code,reason,log_tail,cause", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_class_from_what_each_cloud_prints(provider: str, exit_code: int | None, reason: str | None,
                                                log_tail: str, cause: Cause) -> None:
    fixes = fixes_of(provider)
    found = classify(exit_code, log_tail, fixes, reason)
    assert found.cause is cause, found
    assert found.fix in found.line and found.fix == fixes.get(cause, FIXES[cause])
    assert "\n" not in found.line and found.source


def test_every_cause_has_a_case_on_every_cloud_where_it_happens() -> None:
    seen = {(c[5], c[1]) for c in CASES}
    for cause in set(Cause) - {Cause.UNKNOWN}:
        # diverged is cloudtune's own line; max_runtime: Azure ML's limits.timeout wording is not known here
        where = {Cause.DIVERGED: {"local", "aws"}, Cause.MAX_RUNTIME: {"local", "aws", "gcp"}}.get(cause, {"aws", "gcp", "azure"})
        assert {p for c, p in seen if c is cause} >= where, cause


@pytest.mark.parametrize("exit_code,log_tail,reason", [
    (1, HEALTHY, None),
    (None, HEALTHY, "The replica workerpool0-0 exited with a non-zero status of 1."),
    (1, HEALTHY + "\nTraceback (most recent call last):\n  File \"train.py\", line 3\nKeyError: 'labels'\n[cloudtune] error: KeyError: 'labels'", "AlgorithmError: KeyError: 'labels' [exit class: error, not retried]"),
    (None, "", None),
])
def test_a_healthy_or_unrecognised_tail_is_unknown(exit_code: int | None, log_tail: str, reason: str | None) -> None:
    found = classify(exit_code, log_tail, fixes_of("aws"), reason)
    assert found.cause is Cause.UNKNOWN and "cloudtune logs JOB" in found.line
    assert "cloudtune logs job-1" in found.for_job("job-1").line


def test_a_root_cause_beats_its_symptoms() -> None:
    """One rank out of GPU memory makes the others time out in their next collective: the OOM is the cause."""
    assert classify(None, NCCL_TIMEOUT + "\n" + TORCH_OOM + "\n" + NCCL_TIMEOUT, fixes_of("aws"), None).cause is Cause.OOM_GPU
    assert classify(-9, TORCH_OOM, fixes_of("local"), None).cause is Cause.OOM_GPU  # the log's evidence beats the bare exit


def test_the_line_keeps_no_credential_and_stays_short() -> None:
    sas = "Failed to pull image https://acct.blob.core.windows.net/c/x?sv=2022-11-02&sig=AbC%2Fsecret token=ghp_123 " + "x" * 400
    found = classify(None, "", fixes_of("azure"), sas)
    assert found.cause is Cause.BAD_IMAGE
    assert "sig=AbC" not in found.line and "ghp_123" not in found.line and "sv=2022" not in found.line
    assert len(redact("y" * 1000)) <= 160


def test_tail_keeps_the_last_lines() -> None:
    assert tail(iter(f"line {i}\n" for i in range(1000)), 3) == "line 997\nline 998\nline 999"


def test_retries_never_rerun_a_cause_a_retry_cannot_cure() -> None:
    assert NEVER_RETRIED == {Cause.OOM_GPU, Cause.OOM_HOST, Cause.DATA_ERROR, Cause.BAD_IMAGE, Cause.DIVERGED,
                             Cause.CAPACITY_OR_QUOTA, Cause.DISK_FULL, Cause.MAX_RUNTIME}
    assert vetoes_retry(TORCH_OOM).cause is Cause.OOM_GPU
    assert vetoes_retry("OSError: [Errno 28] No space left on device").cause is Cause.DISK_FULL
    assert classify(1, "", fixes_of("local"), "DiskFull: disk full on /mnt, 4096 bytes free (x); to fix: y").line.startswith(
        "disk full (disk full on /mnt, 4096 bytes free); to fix: free space")
    assert vetoes_retry("[cloudtune] error: training diverged at step 9: loss is nan").cause is Cause.DIVERGED
    assert vetoes_retry(NCCL_TIMEOUT) is None  # a collective timeout is retried
    assert vetoes_retry(TORCHRUN_SIGKILL) is None  # a bare SIGKILL may be a node taken away: the exit class decides
    assert vetoes_retry(HEALTHY) is None


# ------------------------------------------------------------------------------------------------ local jobs, CLI
OOM_SCRIPT = """\
import sys
print("[cloudtune] step=10/100 loss=2.31", flush=True)
print('Traceback (most recent call last):\\n  File "train.py", line 40, in <module>', file=sys.stderr)
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
      "22.05 GiB of which 1.06 GiB is free.", file=sys.stderr)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
"""
BAD_DATA_SCRIPT = """\
import pathlib
data = pathlib.Path("data.jsonl")
data.write_bytes(b'{"text": "caf\\xe9"}\\n')  # Latin-1, not UTF-8
print(data.read_text(encoding="utf-8"))
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _spec(tmp: Path, script: str, command: str = "python train.py", retries: int = 0) -> Path:
    (tmp / "src").mkdir(parents=True, exist_ok=True)
    (tmp / "src/train.py").write_text(script)
    spec = tmp / "job.yaml"
    spec.write_text(f"name: triage\ncommand: {command}\ncode: src\nretries: {retries}\n")
    return spec


def test_status_shows_the_cause_of_a_failed_local_job(tmp_path: Path) -> None:
    job = api.launch(_spec(tmp_path, OOM_SCRIPT))
    assert job.wait(timeout=120) == "failed", "\n".join(job.logs())
    text = CliRunner().invoke(main, ["status", job.job_id])
    assert text.exit_code == 0, text.output
    cause = [ln for ln in text.output.splitlines() if ln.startswith("cause:")]
    assert len(cause) == 1 and "oom_gpu" in cause[0] and FIXES[Cause.OOM_GPU] in cause[0], text.output
    info = json.loads(CliRunner().invoke(main, ["status", job.job_id, "--json"]).output)
    assert info["cause"]["cause"] == "oom_gpu" and info["cause"]["fix"] == FIXES[Cause.OOM_GPU]
    assert "Tried to allocate 2.00 GiB" in info["cause"]["line"]
    assert api.get_job(job.job_id)._record.extra["triage"] == info["cause"]  # kept: the log is read once


def test_bad_data_in_a_local_job_is_a_data_error(tmp_path: Path) -> None:
    job = api.launch(_spec(tmp_path, BAD_DATA_SCRIPT))
    assert job.wait(timeout=120) == "failed", "\n".join(job.logs())
    info = json.loads(CliRunner().invoke(main, ["status", job.job_id, "--json"]).output)
    assert info["cause"]["cause"] == "data_error" and "UnicodeDecodeError" in info["cause"]["line"]


def test_a_succeeded_job_has_no_cause(tmp_path: Path) -> None:
    job = api.launch(_spec(tmp_path, "print('fine')\n"))
    assert job.wait(timeout=120) == "succeeded"
    assert job.info()["cause"] is None
    assert "cause:" not in CliRunner().invoke(main, ["status", job.job_id]).output


def test_status_does_not_fail_when_the_log_cannot_be_read(tmp_path: Path, home: Path) -> None:
    job = api.launch(_spec(tmp_path, "import sys; sys.exit(75)\n"))
    assert job.wait(timeout=120) == "failed"
    log = home / "jobs" / job.job_id / "job.log"
    log.unlink()
    log.mkdir()  # reading it now fails
    result = CliRunner().invoke(main, ["status", job.job_id])
    assert result.exit_code == 0, result.output
    assert "cause:  collective_timeout" in result.output and "note:   the log could not be read" in result.output
    assert "triage" not in api.get_job(job.job_id)._record.extra  # not kept: the next status tries the log again


def test_a_retried_exit_is_not_rerun_when_the_log_shows_oom(tmp_path: Path) -> None:
    """Exit 75 asks for a retry, but the attempt ran out of GPU memory: a retry would fail the same way."""
    job = api.launch(_spec(tmp_path, OOM_SCRIPT, command="python train.py 75", retries=2))
    assert job.wait(timeout=120) == "failed"
    log = "\n".join(job.logs())
    assert "restarting" not in log and "[cloudtune] not retried: out of GPU memory" in log, log
    assert job.info()["cause"]["cause"] == "oom_gpu"
