"""Runs one local job: lays out its contract, starts one `cloudtune-run` per node, streams their output to
`job.log`, restarts up to `retries` times, enforces max_runtime, and records the outcome.

Started as `python -m cloudtune.local.supervisor JOB_DIR` in its own session, so `cancel` can signal
the whole process group. The outcome goes to `JOB_DIR/state.json` (written atomically) and the job store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import IO, Any

SAFE_ENV_PREFIXES = ("LC_", "OPENBLAS_", "OMP_", "MKL_", "HF_", "TRANSFORMERS_", "TORCH_", "CUDA_", "NCCL_", "GLOO_")
SAFE_ENV = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "TZ", "USER", "CLOUDTUNE_HOME"}
GRACE_SECONDS = 30.0


def write_state(job_dir: Path, **fields: Any) -> dict[str, Any]:
    path = job_dir / "state.json"
    state = read_state(job_dir)
    state.update(fields, updated_at=time.time())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return state


def read_state(job_dir: Path) -> dict[str, Any]:
    path = job_dir / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def container_env(node_env: dict[str, str], secret_names: list[str]) -> dict[str, str]:
    """A container sees its contract, not the caller's shell: pass only runtime essentials and named secrets."""
    env = {k: v for k, v in os.environ.items() if k in SAFE_ENV or k.startswith(SAFE_ENV_PREFIXES)}
    env.update({k: os.environ[k] for k in secret_names if k in os.environ})
    env["PYTHONUNBUFFERED"] = "1"
    env.update(node_env)
    return env


def materialise(plan: dict[str, Any]) -> None:
    """Make the copies (inputs, bundles) and write the contract files of every node."""
    request = plan["request"]
    for copy in request["copies"]:
        src, dest = Path(copy["source"]), Path(copy["destination"])
        dest.mkdir(parents=True, exist_ok=True)
        if copy.get("unpack"):
            with tarfile.open(src) as tar:
                tar.extractall(dest, filter="data")
        elif src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / src.name)
    for node in request["nodes"]:
        Path(node["cwd"]).mkdir(parents=True, exist_ok=True)
        for rel, content in node["files"].items():
            path = Path(node["root"]) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))


def _pump(stream: IO[bytes], sink: IO[str], prefix: str, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        with lock:
            sink.write(prefix + line)
            sink.flush()


class Supervisor:
    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.plan = json.loads((job_dir / "plan.json").read_text())
        self.request = self.plan["request"]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cancelled = False

    def _on_term(self, _signum: int, _frame: Any) -> None:
        self.cancelled = True
        self._stop_children()

    def _stop_children(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def _start(self, log: IO[str], lock: threading.Lock) -> list[threading.Thread]:
        self.procs, threads = [], []
        multi = len(self.request["nodes"]) > 1
        for node in self.request["nodes"]:
            argv = [sys.executable, "-m", "cloudtune.runtime.bootstrap", *node["argv"][1:]]
            env = container_env(node["env"], self.request.get("secret_names", []))
            proc = subprocess.Popen(argv, cwd=node["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            t = threading.Thread(target=_pump, args=(proc.stdout, log, f"[{node['host']}] " if multi else "", lock), daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _wait(self, deadline: float) -> tuple[list[int], str | None]:
        """Wait for all nodes; a failed node stops the others (as a cloud job fails as a whole)."""
        reason = None
        stop_at: float | None = None
        while any(p.poll() is None for p in self.procs):
            now = time.time()
            if reason is None and now > deadline:
                reason = "MaxRuntimeExceeded: the job ran past resources.max_runtime"
                self._stop_children()
                stop_at = now + GRACE_SECONDS
            elif reason is None and any(p.poll() not in (None, 0) for p in self.procs):
                self._stop_children()
                stop_at = stop_at or now + GRACE_SECONDS
            if self.cancelled and stop_at is None:
                stop_at = now + GRACE_SECONDS
            if stop_at is not None and now > stop_at:
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
        return [p.returncode for p in self.procs], reason

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        write_state(self.job_dir, state="running", supervisor_pid=os.getpid(), started_at=time.time(), attempt=0)
        lock = threading.Lock()
        with open(self.job_dir / "job.log", "a", encoding="utf-8") as log:
            try:
                materialise(self.plan)
            except OSError as exc:
                log.write(f"[cloudtune] could not lay out the job: {exc}\n")
                return self._finish("failed", 1, f"ClientError: {exc}")
            deadline = time.time() + int(self.request["max_runtime_seconds"])
            retries = int(self.request.get("retries", 0))
            for attempt in range(retries + 1):
                write_state(self.job_dir, attempt=attempt)
                if attempt:
                    log.write(f"[cloudtune] restarting (retry {attempt} of {retries}); resuming from the newest checkpoint\n")
                    log.flush()
                    self._restore_checkpoints()
                threads = self._start(log, lock)
                codes, reason = self._wait(deadline)
                for t in threads:
                    t.join(timeout=5)
                if self.cancelled:
                    log.write("[cloudtune] job cancelled\n")
                    return self._finish("cancelled", 130, "cancelled by the user")
                if all(c == 0 for c in codes):
                    return self._finish("succeeded", 0, None)
                code = next(c for c in codes if c != 0)
                reason = reason or self._failure_reason() or f"AlgorithmError: exit code {code}"
                log.write(f"[cloudtune] attempt {attempt + 1} failed: {reason}\n")
                log.flush()
                if reason.startswith("MaxRuntimeExceeded"):
                    break
            return self._finish("failed", code, reason)

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
            shutil.copytree(dirs[0], other)

    def _failure_reason(self) -> str | None:
        for node in self.request["nodes"]:
            failure = Path(node["root"]) / "opt/ml/output/failure"
            if failure.is_file():
                return failure.read_text().strip() or None
        return None

    def _finish(self, state: str, code: int, reason: str | None) -> int:
        write_state(self.job_dir, state=state, exit_code=code, failure_reason=reason, ended_at=time.time())
        try:
            from cloudtune.store import JobStore

            JobStore().update(self.plan["job_name"], state=state)
        except Exception as exc:  # the state file stays the source of truth
            print(f"[cloudtune] could not update the job store: {exc}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
