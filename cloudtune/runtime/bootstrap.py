"""`cloudtune-run`: the container entrypoint on every cloud.

Detects the provider, builds the RuntimeContext, then either runs the worker in this process
(one process in all, or one per host on PyTorch/XLA: see cloudtune.runtime.xla) or hands it to torchrun
(`nnodes` x `nproc_per_node` from the context).
The worker resolves secrets, then runs the built-in recipe or the user's command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

from cloudtune.errors import JobInputError
from cloudtune.runtime import exitcodes, stopping
from cloudtune.runtime.context import ContractError, RunArgs, detect
from cloudtune.runtime.exitcodes import ExitClass
from cloudtune.runtime.trial import split_arguments
from cloudtune.runtime.types import RuntimeContext
from cloudtune.runtime.xla import PJRT_DEVICE_VAR, xla_device_type

LOG = "[cloudtune]"
EXIT_DIR_VAR = stopping.EXIT_DIR_VAR  # set for torchrun's workers: each failed worker writes its exit code there
CODE_PREFIX = "cloudtune-code-"  # the private per-process code copy: <tmp>/cloudtune-code-<job>-<random>/


def _say(message: str) -> None:
    print(f"{LOG} {message}", flush=True)


def parse_args(argv: Sequence[str] | None) -> RunArgs:
    parser = argparse.ArgumentParser(prog="cloudtune-run", description="cloudtune's training container entrypoint")
    parser.add_argument("--job-json", help="the runtime job config (JSON text or a path)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="a mounted input (Azure ML)")
    parser.add_argument("--model-dir")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--log-dir")
    own, trial_values = split_arguments(list(argv) if argv is not None else sys.argv[1:])
    ns = parser.parse_args(own)
    inputs: dict[str, str] = {}
    for item in ns.input:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--input {item!r} must be NAME=PATH")
        inputs[name] = path
    return RunArgs(ns.job_json, inputs, ns.model_dir, ns.checkpoint_dir, ns.log_dir, trial_values)


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
    """Run a child; forward SIGTERM/SIGINT to it so it can checkpoint before exiting.

    Returns the child's exit code, except that a child that fails after this process was signalled reports
    preemption (EXIT_PREEMPTED: the node was stopped), and a child killed by signal N reports 128+N, as a shell does.
    A child still running STOP_MARGIN_S after its own stop deadline (cloudtune.runtime.stopping) is killed."""
    child = subprocess.Popen(cmd, **kwargs)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = _wait_bounded(child, received)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0 and received:
        return exitcodes.EXIT_PREEMPTED
    return 128 - code if code < 0 else code


def _wait_bounded(child: subprocess.Popen, received: list[int], poll_s: float = 1.0) -> int:
    """The child's exit code; once a signal was received, the child gets stop_deadline() + STOP_MARGIN_S seconds
    before it is killed (SIGKILL), as the cloud would at the end of its notice."""
    kill_at: float | None = None
    while True:
        try:
            return child.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        if received and kill_at is None:
            kill_at = time.monotonic() + stopping.stop_deadline() + stopping.STOP_MARGIN_S
        if kill_at is not None and time.monotonic() >= kill_at:
            _say(f"stop deadline: the job's process {child.pid} did not exit within {stopping.stop_deadline():.0f} s "
                 f"(+{stopping.STOP_MARGIN_S:.0f} s) of SIGTERM: killed")
            child.kill()
            return child.wait()


def launch_torchrun(ctx: RuntimeContext, argv: Sequence[str]) -> int:
    """Run the workers under torchrun; return the node's exit code, of the class that explains its workers' failures.

    One node uses torchrun's standalone rendezvous (a free port of its own), so that two single-node jobs on one
    machine never meet on a default MASTER_PORT; several nodes meet at the context's master address and port."""
    if ctx.num_nodes == 1:
        where = ["--standalone"]
        master = "standalone (a free local port)"
    else:
        where = [f"--master-addr={ctx.master_addr}", f"--master-port={ctx.master_port}"]
        master = f"{ctx.master_addr}:{ctx.master_port}"
    cmd = [
        sys.executable, "-m", "cloudtune.runtime.torchrun",  # torchrun, without a traceback repeating the workers' error
        f"--nnodes={ctx.num_nodes}",
        f"--node-rank={ctx.node_rank}",
        f"--nproc-per-node={ctx.processes_per_node}",
        *where,
        "-m", "cloudtune.runtime.bootstrap", *argv,
    ]
    _say(f"torchrun: {ctx.num_nodes} node(s) x {ctx.processes_per_node} process(es), node rank {ctx.node_rank}, master {master}")
    with tempfile.TemporaryDirectory(prefix="cloudtune-exit-") as exit_dir:
        env = {**os.environ, EXIT_DIR_VAR: exit_dir}
        if ctx.failure_file is not None:  # where the torchrun wrapper names a rank killed by a signal
            env["CLOUDTUNE_FAILURE_FILE"] = str(ctx.failure_file)
        code = _run_forwarding_sigterm(cmd, env=env)
        if code != exitcodes.EXIT_ERROR:  # the wrapper's word: the class of the first rank that failed (or 0)
            return code
        return _workers_exit_code(Path(exit_dir), code)


def _workers_exit_code(exit_dir: Path, torchrun_code: int) -> int:
    """The code of the class that explains the failed workers' codes (torchrun itself exits 1 whatever they were);
    torchrun's own code when no worker reported one (the agent failed before or beside them)."""
    classes = []
    for path in sorted(exit_dir.glob("rank-*"))[:4096]:
        try:
            classes.append(exitcodes.classify(int(path.read_text().strip() or "1")))
        except (OSError, ValueError):
            continue
    worst = exitcodes.worst(classes)
    return torchrun_code if worst is ExitClass.SUCCEEDED else exitcodes.code_of(worst)


def _report_worker_exit(code: int) -> None:
    """Under torchrun: leave this worker's exit code where the node's `cloudtune-run` reads it."""
    stopping.report_worker_exit(code)


@contextmanager
def _unpacked_code(ctx: RuntimeContext) -> Iterator[Path]:
    """The code dir, with a bundle tarball (SageMaker's code channel, Vertex's bundle URI) unpacked.

    The unpacked copy is private to this process (a 0700 temp dir: ranks on a node never race on the same
    files, other users cannot read it, a retry re-extracts) and is removed when the block ends."""
    code = ctx.code_dir or Path.cwd()
    if code.is_file() and code.name.endswith(".tar.gz"):
        tarballs = [code]
    elif (code / ".cloudtune").is_dir():  # an unpacked bundle (SageMaker script mode's /opt/ml/code)
        tarballs = []
    else:
        tarballs = sorted(code.glob("*.tar.gz")) if code.is_dir() else []
    if not tarballs:
        yield code
        return
    target = Path(tempfile.mkdtemp(prefix=f"{CODE_PREFIX}{ctx.job_name}-"))
    try:
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(target, filter="data")
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


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
    with _unpacked_code(ctx) as code:
        _say(f"running command in {code}: {job['command']}")
        return _run_forwarding_sigterm(["/bin/sh", "-c", job["command"]], cwd=code)


def _close_process_group() -> None:
    """Destroy the default process group, if the recipe made one, before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads can outlive the group and abort the process
    ("terminate called without an active exception", SIGABRT) after a successful run. After a SIGTERM the
    group gets stopping.TEARDOWN_S (a peer that is gone must not hold this process past its stop bound)."""
    if stopping.stop_requested():
        if not stopping.close_process_group():
            _say(f"warning: the process group did not shut down within {stopping.TEARDOWN_S:.0f} s of the stop; exiting")
        return
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_model_dir(ctx: RuntimeContext) -> int:
    """After a run that exited 0, on the first node: a built-in recipe that left the model dir empty fails the job
    (JobInputError: one line, exit 1); a command that did gets a warning in the log (the job succeeds, as on the
    clouds' own containers). Returns the exit code to use."""
    if not ctx.model_dir.is_dir() or next(ctx.model_dir.iterdir(), None) is not None:
        return 0
    if ctx.job.get("train"):
        raise JobInputError(f"the recipe wrote no model to the model dir {ctx.model_dir}")
    _say(f"warning: nothing was written to the model dir {ctx.model_dir} ($CLOUDTUNE_MODEL_DIR); files written "
         f"elsewhere in the container are lost when it ends")
    return 0


def _record_failure(ctx: RuntimeContext | None, message: str, code: int) -> None:
    """Write the failure reason, tagged with its exit class, where the cloud shows it (SageMaker's failure file).

    The first reason written stays: the worker that failed first says why, not the `exit code 1` of its launcher."""
    if ctx is None or ctx.failure_file is None or ctx.failure_file.exists():
        return
    tag = " " + exitcodes.describe(exitcodes.classify(code))
    ctx.failure_file.parent.mkdir(parents=True, exist_ok=True)
    ctx.failure_file.write_text(message[:1024 - len(tag)] + tag)


def announce_xla(ctx: RuntimeContext, device: str) -> None:
    """PyTorch/XLA: this one process drives every device of the host (SPMD), so torchrun is not started whatever
    processes_per_node says (see cloudtune.runtime.xla). PJRT_DEVICE is set for the recipe when it was inferred."""
    os.environ.setdefault(PJRT_DEVICE_VAR, device)
    ignored = f"; processes_per_node {ctx.processes_per_node} is not used" if ctx.processes_per_node > 1 else ""
    _say(f"PyTorch/XLA on {device}: one process on this host drives all its devices (SPMD), no torchrun{ignored}")


def _under_torchrun() -> bool:
    """True in a worker that torchrun started (its agent sets TORCHELASTIC_RUN_ID). Not LOCAL_RANK: Azure ML's
    pytorch distribution sets LOCAL_RANK=0 on the one process per node that must start torchrun itself."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; exit with the code of its exit class (see cloudtune.runtime.exitcodes)."""
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if code != 0 and _under_torchrun():
        _report_worker_exit(code)
    if stopping.stop_requested():  # stopped (SIGTERM): exit now, without a teardown that could hang
        stopping.exit_now(code)
    return code


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    ctx: RuntimeContext | None = None
    try:
        ctx = detect(args)
        under_torchrun = _under_torchrun()
        if not under_torchrun:
            _say(f"provider={ctx.provider} job={ctx.job_name} node {ctx.node_rank + 1}/{ctx.num_nodes} "
                 f"model_dir={ctx.model_dir} checkpoint_dir={ctx.checkpoint_dir}")
        xla = None if under_torchrun else xla_device_type()
        if xla is not None:
            announce_xla(ctx, xla)
        if ctx.world_size > 1 and not under_torchrun and xla is None:
            code = launch_torchrun(ctx, argv)
        else:
            code = run_worker(ctx)
        if code == 0 and not under_torchrun and ctx.node_rank == 0:
            code = check_model_dir(ctx)
    except ContractError as exc:  # the container was set up wrong: it would fail again
        _say(f"error: container contract: {exc}")
        _record_failure(ctx, f"ClientError: {exc}", exitcodes.EXIT_INPUT)
        return exitcodes.EXIT_INPUT
    except SystemExit as exc:  # the recipe's own exit (143 after a SIGTERM checkpoint)
        return int(exc.code or 0) if not isinstance(exc.code, str) else exitcodes.EXIT_ERROR
    except JobInputError as exc:  # the job's data/model/options: one clear line, no traceback; never retried
        if int(os.environ.get("RANK", "0")) == 0:  # every rank meets the same input: the line is printed once
            _say(f"error: {exc}")
        _record_failure(ctx, f"AlgorithmError: {exc}", exitcodes.EXIT_INPUT)
        return exitcodes.EXIT_INPUT
    except Exception as exc:  # the job failed: report it where the cloud shows failures
        traceback.print_exc()
        _say(f"error: {type(exc).__name__}: {exc}")
        code = exitcodes.code_of(exitcodes.exception_class(exc))
        _record_failure(ctx, f"AlgorithmError: {type(exc).__name__}: {exc}", code)
        return code
    if code != 0:
        _record_failure(ctx, f"AlgorithmError: exit code {code}", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
