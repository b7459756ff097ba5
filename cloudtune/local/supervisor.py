"""Runs one local job: lays out its contract, starts one `cloudtune-run` per node, streams their output to
`job.log`, restarts up to `retries` times, enforces max_runtime, and records the outcome.

Started as `python -m cloudtune.local.supervisor JOB_DIR` in its own session; `cancel` sends it SIGTERM.
The outcome goes to `JOB_DIR/state.json` (written atomically) and the job store.

Every process a job starts ends with the job: each node runs in its own process group, which gets SIGTERM
when the job is stopped (cancel, max_runtime, a failed node) and the grace period to checkpoint; then every
process left in the supervisor's tree is killed, found through the subreaper (cloudtune.local.proctree) even
when it left its group. A failure is retried only when its exit class says a fresh start can cure it
(cloudtune.runtime.exitcodes) and the attempt's log shows no cause a retry cannot cure (a CUDA out-of-memory,
bad data, a bad image, a diverged run: cloudtune.kit.triage.vetoes_retry).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from cloudtune.errors import CloudtuneError
from cloudtune.local import diskspace
from cloudtune.local.starting import claim
from cloudtune.local.statefile import write_state
from cloudtune.local.copies import CopyStats, copy_tree
from cloudtune.local.mounts import with_hook
from cloudtune.local.proctree import become_subreaper, kill_all, signal_group
from cloudtune.runtime.exitcodes import CLASSES, ExitClass, classify, describe, retried, worst
from cloudtune.runtime.stopping import STOP_DEADLINE_VAR

SAFE_ENV_PREFIXES = ("LC_", "OPENBLAS_", "OMP_", "MKL_", "HF_", "TRANSFORMERS_", "TORCH_", "CUDA_", "NCCL_", "GLOO_")
SAFE_ENV = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "TZ", "USER", "CLOUDTUNE_HOME"}
GRACE_SECONDS = 30.0  # what stopped nodes get to checkpoint before SIGKILL; CLOUDTUNE_STOP_GRACE_S overrides it
GRACE_ENV = "CLOUDTUNE_STOP_GRACE_S"
TAG = re.compile(r" ?\[exit class: [^\]]*\]")  # the runtime's own tag, replaced by the supervisor's
KILL_WAIT_SECONDS = 10.0  # how long SIGKILLed processes get to disappear


def make_job_private(job_dir: Path) -> None:
    """The job's files are the user's alone (cloudtune.store keeps $CLOUDTUNE_HOME 0700 and jobs.db 0600): what
    the job writes from now on is made with umask 077 (dirs 0700, files 0600), and the job dir and the files the
    launcher wrote before the supervisor started (plan, state, logs) are tightened to the same."""
    os.umask(0o077)
    for path in (job_dir, *(job_dir / n for n in ("plan.json", "state.json", "job.log", "supervisor.log"))):
        try:
            os.chmod(path, 0o700 if path == job_dir else 0o600)
        except OSError:
            pass  # not there (yet), or not ours: the supervisor runs on


def container_env(node_env: dict[str, str], secret_names: list[str]) -> dict[str, str]:
    """A container sees its contract, not the caller's shell: pass only runtime essentials and named secrets."""
    env = {k: v for k, v in os.environ.items() if k in SAFE_ENV or k.startswith(SAFE_ENV_PREFIXES)}
    env.update({k: os.environ[k] for k in secret_names if k in os.environ})
    env["PYTHONUNBUFFERED"] = "1"
    # a stopped job's own deadline falls inside the grace this supervisor gives it before SIGKILL, as a cloud's
    # notice bounds it there (cloudtune.runtime.stopping); the job's `env:` may still set it
    env[STOP_DEADLINE_VAR] = f"{max(1.0, grace_seconds() - 5.0):g}"
    env.update(node_env)
    return with_hook(env)  # emulate gcp/azure: bucket-mount semantics (cloudtune.local.mounts)


def thread_env(nodes: int, processes_per_node: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """OMP_NUM_THREADS for each process of a job whose nodes all share this machine, unless the user set it.

    Each process would otherwise start one thread per core, and N processes on C cores oversubscribe them N times:
    each gets C // N (at least 1). A job of one process keeps torch's own default."""
    env = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in env or nodes * processes_per_node <= 1:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, nodes * processes_per_node)))}


def materialise(plan: dict[str, Any]) -> CopyStats:
    """Make the copies (inputs, bundles) and write the contract files of every node.

    Inputs are cloned copy-on-write where the file system can (see cloudtune.local.copies), never linked."""
    request = plan["request"]
    stats = CopyStats()
    for copy in request["copies"]:
        src, dest = Path(copy["source"]), Path(copy["destination"])
        dest.mkdir(parents=True, exist_ok=True)
        if copy.get("unpack"):
            with tarfile.open(src) as tar:
                tar.extractall(dest, filter="data")
        else:
            copy_tree(src, dest, stats, uploaded_only=True)  # as a cloud job gets an uploaded input
    for node in request["nodes"]:
        Path(node["cwd"]).mkdir(parents=True, exist_ok=True)
        for rel, content in node["files"].items():
            path = Path(node["root"]) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return stats


class SafeLog:
    """job.log that a full disk cannot stop: a write that fails is dropped (the job's output is still drained, so
    no node blocks on its pipe), and the last TAIL_LINES lines stay in memory (`recent`) for the outcome."""

    TAIL_LINES = 200

    def __init__(self, sink: IO[str]) -> None:
        self.sink = sink
        self.recent: deque[str] = deque(maxlen=self.TAIL_LINES)
        self.lost = 0  # lines that could not be written

    def write(self, text: str) -> None:
        self.recent.extend(text.splitlines())
        try:
            self.sink.write(text)
        except OSError:
            self.lost += 1

    def flush(self) -> None:
        try:
            self.sink.flush()
        except OSError:
            self.lost += 1


def _pump(stream: IO[bytes], sink: IO[str] | SafeLog, prefix: str, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        with lock:
            sink.write(prefix + line)
            sink.flush()


def grace_seconds() -> float:
    """How long stopped nodes get to checkpoint and exit before every process left is killed."""
    try:
        return max(0.0, float(os.environ.get(GRACE_ENV, GRACE_SECONDS)))
    except ValueError:
        return GRACE_SECONDS


@dataclass
class Attempt:
    """How one attempt ended: each node's exit code, the first failure's class, and why the supervisor stopped it."""

    codes: list[int]
    failed_class: ExitClass = ExitClass.SUCCEEDED
    failed_code: int = 0
    failed_node: int = 0  # the index of the node that failed first
    stopped_for: str | None = None  # "max_runtime" or "cancel"; None when the nodes ended by themselves


class Supervisor:
    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.plan = json.loads((job_dir / "plan.json").read_text())
        self.request = self.plan["request"]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cancelled = False
        self.subreaper = False
        self.image_env: Path | None = None  # runtime image: the cached image env (cloudtune.local.imageenv)

    def _on_term(self, _signum: int, _frame: Any) -> None:
        self.cancelled = True  # the wait loop stops the nodes

    def _start(self, log: SafeLog, lock: threading.Lock) -> list[threading.Thread]:
        """Start one `cloudtune-run` per node, each the leader of its own session and process group."""
        from cloudtune.local.imageenv import fresh_node_envs, image_container_env  # off the dry run's start-up path

        self.procs, threads = [], []
        nodes = self.request["nodes"]
        threads_env = thread_env(len(nodes), int(self.request.get("processes_per_node") or 1))
        node_envs: dict[str, dict[str, str]] = {}
        if self.image_env is not None:
            node_envs = fresh_node_envs(self.request["image"], self.image_env)
        for node in nodes:
            argv = [sys.executable, "-m", "cloudtune.entrypoint", *node["argv"][1:]]
            env = container_env({**threads_env, **node["env"]}, self.request.get("secret_names", []))
            if self.image_env is not None:  # the cloud's start path, on the image's Python, in a fresh node env
                argv, env = list(node["argv"]), image_container_env(env, node_envs[node["host"]])
            proc = subprocess.Popen(argv, cwd=node["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append(proc)
            t = threading.Thread(target=_pump, args=(proc.stdout, log, f"[{node['host']}] " if len(nodes) > 1 else "", lock), daemon=True)
            t.start()
            threads.append(t)
        # each node leads its own session: what finds the job's processes if the supervisor dies (proctree)
        write_state(self.job_dir, sessions=[os.getsid(0), *(p.pid for p in self.procs)])
        return threads

    def _stop_nodes(self) -> None:
        """SIGTERM each running node's process group: its processes get the grace period to checkpoint and exit."""
        for p in self.procs:
            if p.poll() is None:
                signal_group(p.pid, signal.SIGTERM)

    def _first_failure(self, attempt: Attempt) -> None:
        """Record the class of the first failure seen; a node killed by a signal explains the failures beside it."""
        if attempt.failed_code:
            return
        failed = [(c, i) for i, c in enumerate(p.poll() for p in self.procs) if c not in (None, 0)]
        if failed:
            killed = [f for f in failed if f[0] < 0]
            cls = classify(killed[0][0]) if killed else worst([classify(c) for c, _ in failed])
            attempt.failed_class = cls
            attempt.failed_code, attempt.failed_node = next(f for f in killed or failed if classify(f[0]) is cls)

    def _wait(self, deadline: float) -> Attempt:
        """Wait for all nodes; a failed node stops the others (as a cloud job fails as a whole); max_runtime and
        cancel stop them all. Nodes still running after the grace period are killed, process tree and all."""
        attempt = Attempt([])
        kill_at: float | None = None
        while any(p.poll() is None for p in self.procs):
            now = time.time()
            self._first_failure(attempt)
            if attempt.stopped_for is None and not attempt.failed_code and (self.cancelled or now > deadline):
                attempt.stopped_for = "cancel" if self.cancelled else "max_runtime"
            if kill_at is None and (attempt.stopped_for or attempt.failed_code):
                self._stop_nodes()
                kill_at = now + grace_seconds()
            if self.cancelled and attempt.failed_code and attempt.stopped_for is None:
                attempt.stopped_for = "cancel"
            if kill_at is not None and now > kill_at:
                break
            time.sleep(0.1)
        self._first_failure(attempt)
        self._end_tree()
        attempt.codes = [p.wait() for p in self.procs]
        return attempt

    def _end_tree(self) -> None:
        """Kill every process the attempt left (as a container runtime does when the container's main process
        exits), wait until none runs, and remove the private code copies that killed processes could not."""
        for p in self.procs:  # the nodes' own groups first: this needs no /proc and no subreaper
            signal_group(p.pid, signal.SIGKILL)
        survivors = kill_all({p.pid for p in self.procs}, KILL_WAIT_SECONDS)
        if survivors:
            print(f"[cloudtune] processes still running after SIGKILL: {survivors}", file=sys.stderr)
        for leftover in list(Path(tempfile.gettempdir()).glob(f"cloudtune-code-{self.plan['job_name']}-*"))[:1000]:
            shutil.rmtree(leftover, ignore_errors=True)

    def run(self) -> int:
        from cloudtune.local.imageenv import prepare_image  # off the dry run's start-up path

        make_job_private(self.job_dir)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.subreaper = become_subreaper()
        if not self.subreaper:
            print("[cloudtune] cannot become the subreaper of the job's processes: a process that leaves its node's "
                  "process group (setsid) may outlive the job", file=sys.stderr)
        write_state(self.job_dir, state="running", supervisor_pid=os.getpid(), started_at=time.time(), attempt=0)
        diskspace.reserve(self.job_dir)  # room to record the outcome if the job fills the disk
        lock = threading.Lock()
        with open(self.job_dir / "job.log", "a", encoding="utf-8") as raw:
            log = SafeLog(raw)
            try:
                stats = materialise(self.plan)
            except OSError as exc:
                log.write(f"[cloudtune] could not lay out the job: {exc}\n")
                return self._finish("failed", 1, f"ClientError: {exc} {describe(ExitClass.INPUT)}", ExitClass.INPUT)
            log.write(f"[cloudtune] job files: {stats.summary()}\n")
            if self.request.get("image"):
                try:
                    self.image_env = prepare_image(self.request["image"], log)
                except CloudtuneError as exc:
                    if self.cancelled:  # a cancel stops the build's pip too (same process group)
                        log.write("[cloudtune] job cancelled while its image env was being built\n")
                        return self._finish("cancelled", 130, "cancelled by the user", None)
                    log.write(f"[cloudtune] {exc}\n")
                    return self._finish("failed", 1, f"ImageEnvError: {exc.message}", ExitClass.ERROR)
            threads = thread_env(len(self.request["nodes"]), int(self.request.get("processes_per_node") or 1))
            if threads:
                log.write(f"[cloudtune] OMP_NUM_THREADS={threads['OMP_NUM_THREADS']} for each process (this machine's "
                          f"cores shared by the job's processes; set OMP_NUM_THREADS to choose)\n")
            log.flush()
            return self._attempts(log, lock)

    def _attempts(self, log: SafeLog, lock: threading.Lock) -> int:
        """Run the job, then re-run it up to `retries` times, but only after a failure of a retried class."""
        from cloudtune.kit.triage import vetoes_retry  # off the dry run's start-up path

        deadline = time.time() + int(self.request["max_runtime_seconds"])
        retries = int(self.request.get("retries", 0))
        for number in range(retries + 1):
            if self.cancelled:
                break
            write_state(self.job_dir, attempt=number, attempt_started_at=time.time())
            if number:
                log.write(f"[cloudtune] restarting (retry {number} of {retries}); resuming from the newest checkpoint\n")
                log.flush()
            if number or self.request.get("resume_from"):  # a retry, or a job resumed from another's checkpoints
                self._restore_checkpoints()
            self._clear_failure_files()
            log.flush()
            start = (self.job_dir / "job.log").stat().st_size  # where this attempt's output begins
            log.recent.clear()
            threads = self._start(log, lock)
            attempt = self._wait(deadline)
            for t in threads:
                t.join(timeout=5)
            if attempt.stopped_for == "cancel":
                break
            if attempt.stopped_for == "max_runtime":
                reason = "MaxRuntimeExceeded: the job ran past resources.max_runtime"
                log.write(f"[cloudtune] attempt {number + 1} failed: {reason}\n")
                return self._finish("failed", attempt.failed_code or 1, reason, None)
            if all(c == 0 for c in attempt.codes):
                return self._finish("succeeded", 0, None, ExitClass.SUCCEEDED)
            reason = self._disk_full(log, attempt) or self._reason(attempt)
            again = retried(attempt.failed_class) and number < retries and not self.cancelled
            again = again and not reason.startswith("DiskFull:")  # the same disk fills up again
            veto = vetoes_retry(self._attempt_tail(start)) if again else None  # a cause a retry cannot cure
            again = again and veto is None
            log.write(f"[cloudtune] attempt {number + 1} failed: {reason}\n")
            if retries and not retried(attempt.failed_class):
                log.write(f"[cloudtune] not retried: {CLASSES[attempt.failed_class].meaning}\n")
            elif veto is not None:
                log.write(f"[cloudtune] not retried: {veto.line}\n")
            log.flush()
            if not again:
                return self._finish("failed", attempt.failed_code, reason, attempt.failed_class)
        log.write("[cloudtune] job cancelled\n")
        return self._finish("cancelled", 130, "cancelled by the user", None)

    def _disk_full(self, log: SafeLog, attempt: Attempt) -> str | None:
        """The outcome of an attempt that filled its disk, from the lines the supervisor holds (the job's last lines
        may never have reached job.log); None when its output shows no full disk. Frees the reserve."""
        from cloudtune.kit.triage import Cause, vetoes_retry  # off the dry run's start-up path

        found = vetoes_retry("\n".join(log.recent))
        if found is None or found.cause is not Cause.DISK_FULL:
            return None
        diskspace.release(self.job_dir)
        line = diskspace.describe_full(self.job_dir, found.evidence or "", found.fix)
        return f"DiskFull: {line} {describe(attempt.failed_class)}"

    def _reason(self, attempt: Attempt) -> str:
        """The failure reason the job reports (that of the node that failed first), tagged with its exit class."""
        code = attempt.failed_code
        host = self.request["nodes"][attempt.failed_node]["host"]
        where = f" (node {host})" if len(self.request["nodes"]) > 1 else ""
        if code < 0:
            reason = f"AlgorithmError: node {host} was killed by {signal.Signals(-code).name}"
        else:
            reason = self._failure_reason(attempt.failed_node) or f"AlgorithmError: exit code {code}{where}"
        return f"{TAG.sub('', reason).rstrip()} {describe(attempt.failed_class)}"

    def _attempt_tail(self, start: int, limit: int = 256 * 1024) -> str:
        """The last lines (at most `limit` bytes, TAIL_LINES lines) this attempt wrote to job.log from offset `start`."""
        from cloudtune.kit.triage import tail  # off the dry run's start-up path

        try:
            with open(self.job_dir / "job.log", "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(start, size - limit))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return tail(text.splitlines())

    def _clear_failure_files(self) -> None:
        """A new attempt is a new container: no failure file of the last attempt is left to be read as its own."""
        for node in self.request["nodes"]:
            (Path(node["root"]) / "opt/ml/output/failure").unlink(missing_ok=True)

    def _restore_checkpoints(self) -> None:
        """SageMaker restores CheckpointConfig's S3 copy onto every host of a restarted job: do the same,
        from the first host (rank 0 writes checkpoints) to the others."""
        if self.request.get("emulate") != "aws" or len(self.request["nodes"]) < 2:
            return
        dirs = [Path(node["root"]) / "opt/ml/checkpoints" for node in self.request["nodes"]]
        if not dirs[0].is_dir():
            return
        for other in dirs[1:]:
            shutil.rmtree(other, ignore_errors=True)
            copy_tree(dirs[0], other)

    def _failure_reason(self, index: int) -> str | None:
        """What the node wrote to its failure file (SageMaker's contract), if it wrote one."""
        failure = Path(self.request["nodes"][index]["root"]) / "opt/ml/output/failure"
        try:
            return failure.read_text().strip() or None
        except OSError:
            return None

    def _finish(self, state: str, code: int, reason: str | None, exit_class: ExitClass | None) -> int:
        diskspace.release(self.job_dir)  # the job is over: its room is for the outcome
        write_state(self.job_dir, state=state, exit_code=code, failure_reason=reason, ended_at=time.time(),
                    exit_class=exit_class.value if exit_class else None)
        try:
            from cloudtune.store import JobStore

            JobStore().update(self.plan["job_name"], state=state)
        except Exception as exc:  # the state file stays the source of truth
            print(f"[cloudtune] could not update the job store: {exc}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    """Supervise the job in the directory given (arguments: JOB_DIR [LOCK_FD]): only the supervisor that claims it
    runs it (cloudtune.local.starting); another exits 0 at once."""
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0])
    held = claim(job_dir, int(args[1]) if len(args) > 1 else None)  # the lock `submit` handed over, kept until exit
    if held is None:
        print(f"[cloudtune] {job_dir.name}: another supervisor runs this job, or it no longer waits for one", file=sys.stderr)
        return 0
    return Supervisor(job_dir).run()


if __name__ == "__main__":
    sys.exit(main())
