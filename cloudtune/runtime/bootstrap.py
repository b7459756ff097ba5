"""`cloudtune-run`: the container entrypoint on every cloud.

Detects the provider, builds the RuntimeContext, then either runs the worker in this process
(one process in all) or hands it to torchrun (`nnodes` x `nproc_per_node` from the context).
The worker resolves secrets, then runs the built-in recipe or the user's command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path
from typing import Any, Sequence

from cloudtune.errors import JobInputError
from cloudtune.runtime.context import ContractError, RunArgs, detect
from cloudtune.runtime.types import RuntimeContext

LOG = "[cloudtune]"


def _say(message: str) -> None:
    print(f"{LOG} {message}", flush=True)


def parse_args(argv: Sequence[str] | None) -> RunArgs:
    parser = argparse.ArgumentParser(prog="cloudtune-run", description="cloudtune's training container entrypoint")
    parser.add_argument("--job-json", help="the runtime job config (JSON text or a path)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="a mounted input (Azure ML)")
    parser.add_argument("--model-dir")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--log-dir")
    ns = parser.parse_args(argv)
    inputs: dict[str, str] = {}
    for item in ns.input:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--input {item!r} must be NAME=PATH")
        inputs[name] = path
    return RunArgs(ns.job_json, inputs, ns.model_dir, ns.checkpoint_dir, ns.log_dir)


def context_env(ctx: RuntimeContext) -> dict[str, str]:
    """The neutral contract a user's command reads: CLOUDTUNE_* variables."""
    env = {
        "CLOUDTUNE_PROVIDER": ctx.provider,
        "CLOUDTUNE_JOB_NAME": ctx.job_name,
        "CLOUDTUNE_MODEL_DIR": str(ctx.model_dir),
        "CLOUDTUNE_CHECKPOINT_DIR": str(ctx.checkpoint_dir),
        "CLOUDTUNE_LOG_DIR": str(ctx.log_dir),
        "CLOUDTUNE_NODE_RANK": str(ctx.node_rank),
        "CLOUDTUNE_NUM_NODES": str(ctx.num_nodes),
    }
    for name, path in ctx.inputs.items():
        env[f"CLOUDTUNE_INPUT_{name.upper().replace('-', '_')}"] = str(path)
    return env


def _run_forwarding_sigterm(cmd: list[str], **kwargs: Any) -> int:
    """Run a child; forward SIGTERM/SIGINT to it so it can checkpoint before exiting."""
    child = subprocess.Popen(cmd, **kwargs)

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def launch_torchrun(ctx: RuntimeContext, argv: Sequence[str]) -> int:
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={ctx.num_nodes}",
        f"--node-rank={ctx.node_rank}",
        f"--nproc-per-node={ctx.processes_per_node}",
        f"--master-addr={ctx.master_addr}",
        f"--master-port={ctx.master_port}",
        "-m", "cloudtune.runtime.bootstrap", *argv,
    ]
    _say(f"torchrun: {ctx.num_nodes} node(s) x {ctx.processes_per_node} process(es), node rank {ctx.node_rank}, master {ctx.master_addr}:{ctx.master_port}")
    return _run_forwarding_sigterm(cmd)


def _unpack_code(ctx: RuntimeContext) -> Path:
    """The code dir, with a bundle tarball (SageMaker's code channel, Vertex's bundle URI) unpacked."""
    code = ctx.code_dir or Path.cwd()
    if code.is_file() and code.name.endswith(".tar.gz"):
        tarballs = [code]
    else:
        tarballs = sorted(code.glob("*.tar.gz")) if code.is_dir() else []
    if not tarballs:
        return code
    # one private copy per process: ranks on a node never race on the same files; a retry re-extracts
    target = Path(tempfile.gettempdir()) / "cloudtune-code" / ctx.job_name / f"{ctx.node_rank}-{os.environ.get('LOCAL_RANK', '0')}"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(target, filter="data")
    return target


def run_worker(ctx: RuntimeContext) -> int:
    """Run the recipe or the command of `ctx.job` in this process."""
    from cloudtune.runtime.secrets import resolve_secrets

    job = ctx.job
    os.environ.update({k: str(v) for k, v in job.get("env", {}).items()})
    os.environ.update(resolve_secrets(job.get("secrets", {}), os.environ))
    os.environ.update(context_env(ctx))
    for d in (ctx.model_dir, ctx.checkpoint_dir, ctx.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    if job.get("train"):
        from cloudtune.spec import CheckpointSpec, TrainSpec
        from cloudtune.train import run_recipe

        train = TrainSpec.model_validate(job["train"])
        checkpoint = CheckpointSpec.model_validate(job.get("checkpoint") or {})
        try:
            metrics = run_recipe(ctx, train, checkpoint)
        finally:
            _close_process_group()
        if int(os.environ.get("RANK", "0")) == 0:
            _say("metrics " + json.dumps(metrics, sort_keys=True))
        return 0
    code = _unpack_code(ctx)
    _say(f"running command in {code}: {job['command']}")
    return _run_forwarding_sigterm(["/bin/sh", "-c", job["command"]], cwd=code)


def _close_process_group() -> None:
    """Destroy the default process group, if the recipe made one, before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads can outlive the group and abort the process
    ("terminate called without an active exception", SIGABRT) after a successful run."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _record_failure(ctx: RuntimeContext | None, message: str) -> None:
    if ctx is not None and ctx.failure_file is not None:
        ctx.failure_file.parent.mkdir(parents=True, exist_ok=True)
        ctx.failure_file.write_text(message[:1024])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ctx: RuntimeContext | None = None
    try:
        ctx = detect(args)
        under_torchrun = "LOCAL_RANK" in os.environ
        if not under_torchrun:
            _say(f"provider={ctx.provider} job={ctx.job_name} node {ctx.node_rank + 1}/{ctx.num_nodes} "
                 f"model_dir={ctx.model_dir} checkpoint_dir={ctx.checkpoint_dir}")
        if ctx.world_size > 1 and not under_torchrun:
            code = launch_torchrun(ctx, argv)
        else:
            code = run_worker(ctx)
    except ContractError as exc:
        _say(f"error: container contract: {exc}")
        _record_failure(ctx, f"ClientError: {exc}")
        return 2
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except JobInputError as exc:  # the job's data/model/options: one clear line, no traceback
        _say(f"error: {exc}")
        _record_failure(ctx, f"AlgorithmError: {exc}")
        return 1
    except Exception as exc:  # the job failed: report it where the cloud shows failures
        traceback.print_exc()
        _say(f"error: {type(exc).__name__}: {exc}")
        _record_failure(ctx, f"AlgorithmError: {type(exc).__name__}: {exc}")
        return 1
    if code != 0:
        _record_failure(ctx, f"AlgorithmError: exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
