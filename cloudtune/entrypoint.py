"""`cloudtune-run`: the container entrypoint on every cloud.

Detects the provider, builds the RuntimeContext, then either runs the worker in this process
(one process in all, or one per host on PyTorch/XLA: see cloudtune.runtime.xla) or hands it to torchrun
(`nnodes` x `nproc_per_node` from the context), which starts this module again in each worker.
The worker resolves secrets, then runs the built-in recipe (`cloudtune.train.run_recipe`) or the user's command.
Above `cloudtune.train` and `cloudtune.runtime`; nothing in the container imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Sequence

from cloudtune.contracts.logfmt import say_all
from cloudtune.errors import JobInputError
from cloudtune.runtime import exitcodes, stopping
from cloudtune.runtime.context import ContractError, RunArgs, detect
from cloudtune.runtime.exitcodes import record_failure
from cloudtune.runtime.launch import (close_process_group, context_env, launch_torchrun, run_forwarding_sigterm,
                                      unpacked_code)
from cloudtune.runtime.secrets import resolve_secrets
from cloudtune.runtime.streams import whole_lines
from cloudtune.runtime.trial import split_arguments
from cloudtune.runtime.types import RuntimeContext
from cloudtune.runtime.xla import PJRT_DEVICE_VAR, xla_device_type
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train import run_recipe
from cloudtune.train.metricreport import log_trial_values

WORKER = ("-m", "cloudtune.entrypoint")  # how torchrun starts this module in each worker


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


def run_worker(ctx: RuntimeContext) -> int:
    """Run the recipe or the command of `ctx.job` in this process."""
    job = ctx.job
    os.environ.update({k: str(v) for k, v in job.get("env", {}).items()})
    os.environ.update(resolve_secrets(job.get("secrets", {}), os.environ))
    os.environ.update(context_env(ctx))
    for d in (ctx.model_dir, ctx.checkpoint_dir, ctx.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    if job.get("train"):
        train = TrainSpec.model_validate(job["train"])
        checkpoint = CheckpointSpec.model_validate(job.get("checkpoint") or {})
        try:
            metrics = run_recipe(ctx, train, checkpoint)
        except BaseException:
            close_process_group(failed=True)
            raise
        close_process_group()
        if int(os.environ.get("RANK", "0")) == 0:
            say_all("metrics " + json.dumps(metrics, sort_keys=True))
        return 0
    with unpacked_code(ctx) as code:
        say_all(f"running command in {code}: {job['command']}")
        # under torchrun the node's ranks share one output: each line of the command's reaches it whole
        return run_forwarding_sigterm(["/bin/sh", "-c", job["command"]], relay_lines=started_by_torchrun(), cwd=code)


def check_model_dir(ctx: RuntimeContext) -> int:
    """After a run that exited 0, on the first node: a built-in recipe that left the model dir empty fails the job
    (JobInputError: one line, exit 1); a command that did gets a warning in the log (the job succeeds, as on the
    clouds' own containers). Returns the exit code to use."""
    if not ctx.model_dir.is_dir() or next(ctx.model_dir.iterdir(), None) is not None:
        return 0
    if ctx.job.get("train"):
        raise JobInputError(f"the recipe wrote no model to the model dir {ctx.model_dir}")
    say_all(f"warning: nothing was written to the model dir {ctx.model_dir} ($CLOUDTUNE_MODEL_DIR); files written "
         f"elsewhere in the container are lost when it ends")
    return 0


def announce_xla(ctx: RuntimeContext, device: str) -> None:
    """PyTorch/XLA: this one process drives every device of the host (SPMD), so torchrun is not started whatever
    processes_per_node says (see cloudtune.runtime.xla). PJRT_DEVICE is set for the recipe when it was inferred."""
    os.environ.setdefault(PJRT_DEVICE_VAR, device)
    ignored = f"; processes_per_node {ctx.processes_per_node} is not used" if ctx.processes_per_node > 1 else ""
    say_all(f"PyTorch/XLA on {device}: one process on this host drives all its devices (SPMD), no torchrun{ignored}")


def started_by_torchrun() -> bool:
    """True in a worker that torchrun started (its agent sets TORCHELASTIC_RUN_ID). Not LOCAL_RANK: Azure ML's
    pytorch distribution sets LOCAL_RANK=0 on the one process per node that must start torchrun itself."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; exit with the code of its exit class (see cloudtune.runtime.exitcodes)."""
    whole_lines()  # this node's processes share its output: each of this one's lines is written in one piece
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if code != 0 and started_by_torchrun():
        stopping.report_worker_exit(code)
    # stopped (SIGTERM), or a failed torchrun worker whose peers may be gone (a pending checkpoint commit, gloo's
    # threads): exit now, without an interpreter teardown that could wait on them
    if stopping.stop_requested() or (code != 0 and started_by_torchrun()):
        stopping.exit_now(code)
    return code


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    ctx: RuntimeContext | None = None
    try:
        ctx = detect(args)
        under_torchrun = started_by_torchrun()
        if not under_torchrun:
            say_all(f"provider={ctx.provider} job={ctx.job_name} node {ctx.node_rank + 1}/{ctx.num_nodes} "
                 f"model_dir={ctx.model_dir} checkpoint_dir={ctx.checkpoint_dir}")
        if not under_torchrun and ctx.node_rank == 0 and ctx.job.get("trial"):
            log_trial_values(ctx.job["trial"])  # where Azure ML's sweeps keep a trial's values: MLflow
        xla = None if under_torchrun else xla_device_type()
        if xla is not None:
            announce_xla(ctx, xla)
        if ctx.world_size > 1 and not under_torchrun and xla is None:
            code = launch_torchrun(ctx, [*WORKER, *argv])
        else:
            code = run_worker(ctx)
        if code == 0 and not under_torchrun and ctx.node_rank == 0:
            code = check_model_dir(ctx)
    except ContractError as exc:  # the container was set up wrong: it would fail again
        say_all(f"error: container contract: {exc}")
        record_failure(ctx.failure_file if ctx else None, f"ClientError: {exc}", exitcodes.EXIT_INPUT)
        return exitcodes.EXIT_INPUT
    except SystemExit as exc:  # the recipe's own exit (143 after a SIGTERM checkpoint)
        return int(exc.code or 0) if not isinstance(exc.code, str) else exitcodes.EXIT_ERROR
    except JobInputError as exc:  # the job's data/model/options: one clear line, no traceback; never retried
        if stopping.first_to_report("input"):  # every rank meets the same input: the line is printed once
            say_all(f"error: {exc}")
        record_failure(ctx.failure_file if ctx else None, f"AlgorithmError: {exc}", exitcodes.EXIT_INPUT)
        return exitcodes.EXIT_INPUT
    except Exception as exc:  # the job failed: report it where the cloud shows failures
        traceback.print_exc()
        say_all(f"error: {type(exc).__name__}: {exc}")
        code = exitcodes.code_of(exitcodes.exception_class(exc))
        record_failure(ctx.failure_file if ctx else None, f"AlgorithmError: {type(exc).__name__}: {exc}", code)
        return code
    if code != 0:
        record_failure(ctx.failure_file if ctx else None, f"AlgorithmError: exit code {code}", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
