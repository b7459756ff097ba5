"""The processes of `cloudtune-run`: torchrun and its workers' exit codes, a user's command with SIGTERM forwarded and
a bounded stop, the job's code bundle unpacked, the variables a command reads, the process group closed.

Imports no recipe: `cloudtune.entrypoint` (above `cloudtune.train`) uses these.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

from cloudtune.contracts.logfmt import say_all
from cloudtune.runtime import exitcodes, stopping, streams
from cloudtune.runtime.exitcodes import ExitClass
from cloudtune.runtime.types import RuntimeContext

EXIT_DIR_VAR = stopping.EXIT_DIR_VAR  # set for torchrun's workers: each failed worker writes its exit code there
RELAY_DRAIN_S = 10.0  # after a relayed child exits: how long what its output pipes still hold may take to reach ours
CODE_PREFIX = "cloudtune-code-"  # the private per-process code copy: <tmp>/cloudtune-code-<job>-<random>/


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


def run_forwarding_sigterm(cmd: list[str], relay_lines: bool = False, **kwargs: Any) -> int:
    """Run a child; forward SIGTERM/SIGINT to it so it can checkpoint before exiting.

    Returns the child's exit code, except that a child that fails after this process was signalled reports
    preemption (EXIT_PREEMPTED: the node was stopped), and a child killed by signal N reports 128+N, as a shell does.
    A child still running STOP_MARGIN_S after its own stop deadline (cloudtune.runtime.stopping) is killed.
    `relay_lines`: the child's stdout and stderr reach this process's one whole line per write
    (cloudtune.runtime.streams), for a child that shares its node's output with other ranks; what the child's own
    children still write RELAY_DRAIN_S after it exited is dropped."""
    if relay_lines:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = subprocess.Popen(cmd, **kwargs)
    relays = streams.start_relays(child.stdout, child.stderr) if relay_lines else []
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:  # the drain runs under the same handlers: a SIGTERM then is the child's, not this process's death
        code = wait_bounded(child, received)
        drained_by = time.monotonic() + RELAY_DRAIN_S
        for t in relays:
            t.join(timeout=max(0.0, drained_by - time.monotonic()))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0 and received:
        return exitcodes.EXIT_PREEMPTED
    return 128 - code if code < 0 else code


def wait_bounded(child: subprocess.Popen, received: list[int], poll_s: float = 1.0) -> int:
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
            say_all(f"stop deadline: the job's process {child.pid} did not exit within {stopping.stop_deadline():.0f} s "
                 f"(+{stopping.STOP_MARGIN_S:.0f} s) of SIGTERM: killed")
            child.kill()
            return child.wait()


def launch_torchrun(ctx: RuntimeContext, worker: Sequence[str]) -> int:
    """Run the workers under torchrun (`worker`: what follows torchrun's options, e.g. `-m cloudtune.entrypoint ARGS`);
    return the node's exit code, of the class that explains its workers' failures.

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
        *worker,
    ]
    say_all(f"torchrun: {ctx.num_nodes} node(s) x {ctx.processes_per_node} process(es), node rank {ctx.node_rank}, master {master}")
    with tempfile.TemporaryDirectory(prefix="cloudtune-exit-") as exit_dir:
        env = {**os.environ, EXIT_DIR_VAR: exit_dir}
        if ctx.failure_file is not None:  # where the torchrun wrapper names a rank killed by a signal
            env["CLOUDTUNE_FAILURE_FILE"] = str(ctx.failure_file)
        code = run_forwarding_sigterm(cmd, env=env)
        if code != exitcodes.EXIT_ERROR:  # the wrapper's word: the class of the first rank that failed (or 0)
            return code
        return workers_exit_code(Path(exit_dir), code)


def workers_exit_code(exit_dir: Path, torchrun_code: int) -> int:
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


@contextmanager
def unpacked_code(ctx: RuntimeContext) -> Iterator[Path]:
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


def close_process_group(failed: bool = False) -> None:
    """Destroy the default process group, if the recipe made one, before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads can outlive the group and abort the process
    ("terminate called without an active exception", SIGABRT) after a successful run. After a SIGTERM, or when the
    recipe `failed` (a diverged run, an error: its peers may already be gone), the group gets stopping.TEARDOWN_S:
    a peer that is gone must not hold this process past its stop bound or in gloo's 30-minute timeout."""
    if stopping.stop_requested() or failed:
        if not stopping.close_process_group():
            why = "the stop" if stopping.stop_requested() else "the failure"
            say_all(f"warning: the process group did not shut down within {stopping.TEARDOWN_S:.0f} s of {why}; exiting")
        return
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
