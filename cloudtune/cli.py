"""`cloudtune`: click commands, thin over cloudtune.api.

Imports of pydantic, the launchers and everything heavier happen inside the commands, so that
`cloudtune --help` starts instantly. Exit codes: 0 success, 2 invalid input, 1 the job failed.

Over ~500 lines on purpose: one thin click command per user verb, each delegating to cloudtune.api, read together as
the CLI's table of contents (its options and help texts are most of the lines); there is no logic here to split out.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cloudtune.states import JobState


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error into a message and an exit code, never a traceback: cloudtune's own errors, and a cloud
    SDK's exception raised outside the launcher's retry policy (a client looking for credentials), translated by
    that launcher's classifier (exit 2 for configuration, 1 otherwise). Anything else is one line naming the
    exception, exit 1; `CLOUDTUNE_DEBUG=1` shows its traceback. Ctrl-C is "interrupted", exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cloudtune.errors import CloudtuneError

        try:
            return fn(*args, **kwargs)
        except CloudtuneError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C, e.g. while a call is being retried
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
            import os

            from cloudtune.clierrors import quiet_pipe_exit, stream_broken, user_error
            from cloudtune.kit.retry import translate

            if isinstance(exc, BrokenPipeError) and (stream_broken(sys.stdout) or stream_broken(sys.stderr)):
                quiet_pipe_exit()  # `cloudtune list | head -1`: ends quietly, as a Unix tool does
            if os.environ.get("CLOUDTUNE_DEBUG"):
                raise
            known = translate(exc)
            if known is not None:
                click.echo(f"error: {known}", err=True)
                sys.exit(known.exit_code)
            mistake = user_error(exc)
            if mistake is not None:  # the user's input or situation: exit 2, never "report it"
                click.echo(f"error: {mistake[0]}" + (f"\nTo fix: {mistake[1]}" if mistake[1] else ""), err=True)
                sys.exit(2)
            text = " ".join(str(exc).split())[:500] or "no message"
            click.echo(f"error: {type(exc).__module__}.{type(exc).__qualname__}: {text}\nTo fix: run it again with "
                       "CLOUDTUNE_DEBUG=1 for the traceback, and report it if it is not about your setup", err=True)
            sys.exit(1)

    return wrapper


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cloudtune")
def main() -> None:
    """Fine-tune pretrained models on SageMaker, Vertex AI, Azure ML or this machine, from one job.yaml."""
    from cloudtune.clierrors import quiet_sdk_loggers, restore_ctrl_c

    restore_ctrl_c()
    quiet_sdk_loggers()


# ------------------------------------------------------------------------------------------- launch
def _print_plan(plan: Any) -> None:
    click.echo(f"provider:       {plan.provider}")
    click.echo(f"job name:       {plan.job_name}")
    click.echo(f"instance type:  {plan.instance_type} x {plan.instance_count}")
    basis = getattr(plan, "cost_basis", "on-demand")
    cost = (f"unknown (cloudtune's catalog has no list price for {plan.instance_type}; see {plan.provider}'s "
            "pricing page)") if plan.estimated_usd_per_hour is None else (
        f"at most ${plan.estimated_usd_per_hour:.2f}/h ({basis})" if "upper bound" in basis
        else f"${plan.estimated_usd_per_hour:.2f}/h ({basis})")
    click.echo(f"estimated cost: {cost}")
    for line in _memory_lines(getattr(plan, "memory", None)):
        click.echo(line)
    if plan.model_uri:
        click.echo(f"model:          {plan.model_uri}")
    click.echo(f"uploads ({len(plan.uploads)}):")
    for up in plan.uploads:
        click.echo(f"  {up.source} -> {up.destination}  ({up.bytes} bytes, sha256 {up.sha256[:12]})")
    for note in plan.notes:
        click.echo(f"note: {note}")
    click.echo("request:")
    if plan.request_format == "yaml":
        import yaml

        # libyaml's emitter where PyYAML has it: the same text, about 10x faster than the pure-Python one (a spec
        # with 100,000 env keys: most of the azure dry run's time was spent here)
        from cloudtune.spec.yamlload import gc_paused

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        with gc_paused():  # the representer builds a node per value: no cyclic collections meanwhile
            click.echo(yaml.dump(plan.request, Dumper=dumper, sort_keys=False, width=120).rstrip())
    else:
        click.echo(json.dumps(plan.request, indent=2))


def _memory_lines(memory: dict[str, Any] | None) -> list[str]:
    """The dry run's memory lines (see cloudtune.memory_check.plan_memory): the estimate per GPU against the
    accelerator's memory, its parts, and how gradient checkpointing was decided."""
    if not memory:
        return []
    from cloudtune.memory import count, human

    est = memory.get("estimate")
    if not est:
        return ["memory/device:  unknown (no config.json for the model here: a local model dir, a hub id in the "
                "hub cache or in cloudtune's table gives one)"]
    device = memory.get("device_memory")
    against = (f" of {human(device)} ({memory['accelerator']}; refused above +{memory['margin']:.0%})" if device else
               " (not checked: a local job uses this machine's devices)" if memory.get("accelerator") is None
               and memory.get("local", True)
               else " (not checked: a CPU machine, no GPU memory to check against)" if memory.get("accelerator") is None
               else " (not checked: the accelerator's memory is unknown)")
    parts = ", ".join(f"{k} {human(est[k])}" for k in ("weights", "gradients", "optimizer", "activations"))
    other = est["activations_without_checkpointing" if est["gradient_checkpointing"] else "activations_with_checkpointing"]
    over = device and est["total"] > device * (1 + memory["margin"])
    return [f"memory/device:  {human(est['total'])} estimated{against}"
            + (": over it, launched anyway (train.memory_check: false)" if over else ""),
            f"                {parts}; {memory['precision']}, {count(memory['params'])} parameters, "
            f"{memory['world_size']} process(es)",
            f"                gradient checkpointing {'on' if est['gradient_checkpointing'] else 'off'} "
            f"({memory['gradient_checkpointing']}; activations {human(other)} "
            f"{'without' if est['gradient_checkpointing'] else 'with'} it)"]


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--provider", "-p", default="local", show_default=True, help="local | aws | gcp | azure | an installed plugin")
@click.option("--dry-run", is_flag=True, help="print the exact request that would be sent, and stop")
@click.option("--detach", "-d", is_flag=True, help="return as soon as the job is submitted")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. resources.nodes=2")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (logs go to stderr)")
@click.option("--resume", "resume", metavar="JOB", default=None,
              help="start from JOB's newest checkpoint (a stopped job of the same provider)")
@_handle_errors
def launch(spec: str, provider: str, dry_run: bool, detach: bool, overrides: tuple[str, ...], as_json: bool,
           resume: str | None) -> None:
    """Compile SPEC for a provider and run it (or, with --dry-run, show what would run).

    Attached (without --detach), Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a CI step's timeout) all stop
    following: a local job is cancelled with its processes; a cloud job goes on (`cloudtune cancel JOB` stops it).
    Exit 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    from cloudtune import api

    if dry_run:
        plan = api.launch(spec, provider=provider, dry_run=True, overrides=list(overrides), resume=resume)
        _emit_json(plan.to_dict()) if as_json else _print_plan(plan)
        return
    if provider == "local":  # the deep preflight: seconds here rather than a failed job
        from cloudtune.preflight.deep import deep_check

        job_spec, _ = api.prepare(spec, provider, list(overrides))
        started = time.monotonic()
        say = job_spec.train is not None and not as_json  # progress for a person; --json keeps stderr for the job
        if say:
            click.echo("preflight: checking the data, the tokenizer and the model skeleton (imports transformers: "
                       "a few seconds)", err=True)
        for note in deep_check(job_spec):
            if note.startswith("warning:"):
                click.echo(note, err=True)
        if say:
            click.echo(f"preflight: ok in {time.monotonic() - started:.1f} s; starting the job", err=True)
    job = api.launch(spec, provider=provider, overrides=list(overrides), resume=resume)
    for note in (job.record.plan or {}).get("notes", []):  # a launch says what its dry run warns about
        if note.startswith("warning:"):
            click.echo(note, err=True)
    if not as_json:
        click.echo(f"submitted {job.job_id} ({job.provider})")
    if not detach:
        from cloudtune.clierrors import StopSignals, interrupt_exit_code

        try:
            with StopSignals():  # Ctrl-C, SIGTERM and SIGHUP alike (see --help)
                for line in job.logs(follow=True):
                    click.echo(line, err=as_json)
        except KeyboardInterrupt as stop:
            if job.provider == "local":
                job.cancel()
                _say(f"\ncancelled {job.job_id}")
            else:
                _say(f"\nstopped following; the job goes on. `cloudtune cancel {job.job_id}` stops it")
            sys.exit(interrupt_exit_code(stop))
        job.wait()
    info = job.info()
    if as_json:
        _emit_json(info)
    else:
        _print_info(info)
    if info["state"] == JobState.FAILED:
        sys.exit(1)


def _say(text: str) -> None:
    """A last line on stderr that may have no reader left (SIGHUP: the terminal closed)."""
    try:
        click.echo(text, err=True)
    except OSError:
        pass


def _print_info(info: dict[str, Any]) -> None:
    if info.get("kind") == "sweep":
        _print_sweep(info)
        return
    click.echo(f"job:    {info['job_id']}")
    click.echo(f"state:  {info['state']}")
    if info.get("failure_reason"):
        click.echo(f"reason: {info['failure_reason']}")
    if info.get("cause"):  # failure triage: the cause and its fix in one line (cloudtune.kit.triage)
        click.echo(f"cause:  {info['cause']['cause']}: {info['cause']['line']}")
        if info["cause"].get("note"):
            click.echo(f"note:   {info['cause']['note']}")
    for line in _progress_lines(info):
        click.echo(line)
    for warning in info.get("warnings") or []:
        click.echo(f"warning: {warning}")
    if info["state"] in (JobState.FAILED, JobState.CANCELLED):
        click.echo(f"logs:   cloudtune logs {info['job_id']}")
    elif info.get("model_uri"):
        click.echo(f"model:  {info['model_uri']}")
    if info.get("console_url"):
        click.echo(f"console: {info['console_url']}")


def _print_sweep(info: dict[str, Any]) -> None:
    """A sweep's status: its state, objective, and the trials best first (values, state, objective, cost)."""
    from cloudtune.sweep import objective_text

    objective = info["objective"]
    counts = ", ".join(f"{n} {state}" for state, n in sorted(info.get("trial_counts", {}).items())) or "no trials yet"
    click.echo(f"sweep:  {info['job_id']}")
    click.echo(f"state:  {info['state']} ({counts})")
    if info.get("failure_reason"):
        click.echo(f"reason: {info['failure_reason']}")
    click.echo(f"objective: {objective['goal']} {objective['metric']}")
    trials = info.get("trials") or []
    if trials:
        names = sorted({k for t in trials for k in t["parameters"]})
        click.echo("  " + "  ".join(["#".rjust(3), *[n.rsplit(".", 1)[-1][:14].rjust(14) for n in names],
                                     "STATE".ljust(10), objective["metric"][:12].rjust(12), "COST".rjust(8), " JOB"]))
        for t in trials:
            values = [_value(t["parameters"].get(n)).rjust(14) for n in names]
            cost = f"${t['cost_usd']:.2f}" if isinstance(t.get("cost_usd"), (int, float)) else "-"
            click.echo("  " + "  ".join([str(t["number"]).rjust(3), *values, t["state"].ljust(10),
                                         objective_text(t.get("objective")).rjust(12), cost.rjust(8), " " + (t.get("job_id") or "-")]))
        shared = {t.get("note") for t in trials}
        if len(shared) == 1 and None not in shared:  # one note for every trial (a provider's limit) is said once
            click.echo(f"note:   {shared.pop()}")
        else:
            for t in (t for t in trials if t.get("note")):
                click.echo(f"note:   trial {t['number']}: {t['note']}")
    best = info.get("best_trial")
    if best:
        click.echo(f"best:   trial {best['number']} ({best['job_id']}), {objective['metric']}={objective_text(best['objective'])}")
    if info.get("model_uri"):
        click.echo(f"model:  {info['model_uri']} (the best trial's)")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _progress_lines(info: dict[str, Any]) -> list[str]:
    """The status lines on progress, times, metrics and cost (see cloudtune.jobprogress.summarize); none for an
    info without them."""
    from cloudtune.contracts.progress import format_duration

    lines: list[str] = []
    p = info.get("progress") or {}
    if "step" in p:
        total = f"/{p['total_steps']}" if p.get("total_steps") else ""
        at = f" (at step {p['epoch_step']})" if "epoch_step" in p else ""
        parts = [f"step:   {p['step']}{total}"] + ([f"epoch {p['epoch']:.2f}{at}"] if "epoch" in p else [])
        parts += [f"eta {format_duration(p['eta_s'])}"] if "eta_s" in p else []
        parts += ["restarting (the retry resumes from the newest checkpoint)"] if p.get("phase") == "restarting" else []
        over = " over the run" if "whole run" in p.get("tokens_per_second_basis", "") else ""
        unit = p.get("throughput_unit", "tokens")
        parts += [f"{p['tokens_per_second']:.1f} {unit}/s{over}"] if "tokens_per_second" in p else []
        lines.append(", ".join(parts))
    if "loss" in p or "eval_loss" in p:
        at = f" (step {p['eval_step']})" if "eval_step" in p else ""
        lines.append(f"loss:   train {_num(p.get('loss'))}, eval {_num(p.get('eval_loss'))}{at}")
    if info.get("end"):
        lines.append(f"duration: {format_duration(info.get('duration_s'))} ({info.get('start')} -> {info['end']})")
    elif info.get("start"):
        lines.append(f"elapsed: {format_duration(info.get('elapsed_s'))} (since {info['start']})")
    metrics = {k: v for k, v in (info.get("metrics") or {}).items() if isinstance(v, (int, float))
               and not k.endswith(("_before", "_after"))}  # the JSON has those too
    if metrics and info.get("end"):
        lines.append("metrics: " + " ".join(f"{k}={v if isinstance(v, int) else _num(v)}"
                                            for k, v in sorted(metrics.items())))
    cost = info.get("cost") or {}
    if cost.get("usd") is not None:
        lines.append(f"cost:   ${cost['usd']:.2f} ({format_duration(cost.get('seconds'))} x "
                     f"${cost['usd_per_hour']:.2f}/h; {cost.get('basis')})")
    if info.get("note"):
        lines.append(f"note:   {info['note']}")
    return lines


# ------------------------------------------------------------------------------------------- jobs
@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--deep", is_flag=True, help="also load the tokenizer and the model skeleton and render one record of "
              "each shape (imports torch; a few seconds)")
@_handle_errors
def validate(spec: str, overrides: tuple[str, ...], deep: bool) -> None:
    """Check SPEC and report every problem with its field and line.

    Runs every check a dry run makes that needs no provider: the spec, the accelerator name, the local paths and
    inputs, and a command job's code dir."""
    from cloudtune.jobmodel import resolve_job_model
    from cloudtune.spec import load_spec
    from cloudtune.specchecks import check_offline
    from cloudtune.store import JobStore

    job = load_spec(spec, list(overrides))
    for note in check_offline(job, JobStore.lookup):
        click.echo(f"note: {note}", err=True)
    model = job.train.model if job.train else ""
    if model and not model.startswith("/") and ":" not in model and _hf_offline():  # a hub id, no network allowed
        from cloudtune.data.hub import offline_problem

        problem = offline_problem(model)
        if problem:
            click.echo(f"note: {problem} (a local launch refuses it; a cloud job downloads it there)", err=True)
    if deep:
        from cloudtune.preflight.deep import deep_check

        for note in deep_check(resolve_job_model(job, None, JobStore.lookup)):
            click.echo(f"  {note}")
    what = f"train: {job.train.task} on {job.train.model}" if job.train else f"command: {job.command}"
    click.echo(f"ok: {job.name} ({what}; {job.resources.accelerator} x {job.resources.nodes} node(s))")


def _hf_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@main.command(name="list")
@click.option("--provider", "-p", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_handle_errors
def list_(provider: str | None, limit: int, as_json: bool) -> None:
    """List recent jobs, newest first."""
    from cloudtune import api

    rows = [_list_row(record) for record in api.list_jobs(limit=limit, provider=provider)]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no jobs yet: `cloudtune launch job.yaml` starts one")
        return
    import time

    from cloudtune.contracts.progress import format_duration

    width = max(len(r["job_id"]) for r in rows)
    click.echo(f"{'JOB':<{width}}  {'PROVIDER':<8}  {'STATE':<10}  {'CREATED':<19}  {'DURATION':>8}  METRIC")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        metric = r["main_metric"]
        shown = f"{metric['name']}={metric['value']:.4f}" if metric else "-"
        if r.get("kind") == "sweep":
            shown = f"sweep, best {shown}"
        click.echo(f"{r['job_id']:<{width}}  {r['provider']:<8}  {r['state']:<10}  {created:<19}  "
                   f"{format_duration(r['duration_s']):>8}  {shown}")


def _list_row(record: Any) -> dict[str, Any]:
    """One `list` row: the store's record, the state (asked of the launcher until the job ends), its duration
    (elapsed while it runs) and main metric from what the job reported (cloudtune.jobprogress). A running cloud
    job's log is not read here (`cloudtune status JOB` does); a finished one's is read once, then kept."""
    from cloudtune import api
    from cloudtune.jobprogress import local_progress, summarize
    from cloudtune.states import is_terminal

    state, progress = record.state, {}
    try:
        job = api.get_job(record.job_id)
        state = job.status() if not is_terminal(state) else state
        if record.provider == "local" or is_terminal(state):
            progress = job.progress()
        record = job.record
    except Exception:  # noqa: BLE001 - a launcher plugin missing: show what the store knows
        progress = local_progress(record) if record.provider == "local" else {}
    view = summarize(record, state, progress)
    row = {"job_id": record.job_id, "provider": record.provider, "state": state, "created_at": record.created_at,
           "model_uri": record.model_uri, "start": view["start"], "end": view["end"],
           "duration_s": view["elapsed_s"], "main_metric": view["main_metric"]}
    from cloudtune.sweep import best_objective, is_sweep

    if is_sweep(record):  # its best trial's objective, as its trials reported it
        row.update(kind="sweep", main_metric=best_objective(record))
    elif record.extra.get("sweep"):
        row.update(kind="trial", sweep=record.extra["sweep"])
    return row


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@_handle_errors
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state (JOB may be a unique prefix of its id)."""
    from cloudtune import api

    info = api.get_job(job_id).info()
    _emit_json(info) if as_json else _print_info(info)


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@_handle_errors
def logs(job_id: str, follow: bool) -> None:
    """Print a job's log."""
    from cloudtune import api

    try:
        for line in api.get_job(job_id).logs(follow=follow):
            click.echo(line)
    except KeyboardInterrupt:
        sys.exit(130)


@main.command()
@click.argument("job_id")
@_handle_errors
def cancel(job_id: str) -> None:
    """Stop a running job."""
    from cloudtune import api
    from cloudtune.states import is_terminal

    job = api.get_job(job_id)
    before = job.status()
    if is_terminal(before):
        running = job.running_trials()  # a sweep whose driver died leaves its trials running
        if running:
            job.cancel()
            click.echo(f"{job.job_id} already {before}; stopped its running trial(s): "
                       + ", ".join(t.job_id for t in running))
        else:
            click.echo(f"{job.job_id} already {before}")
        return
    job.cancel()
    try:
        state = job.wait(timeout=60)
    except TimeoutError:
        state = job.status()
    click.echo(f"{job.job_id}: {state}")


@main.command()
@click.argument("job_id", metavar="JOB")
@click.argument("directory", metavar="[DIR]", required=False, type=click.Path(file_okay=False))
@click.option("--checkpoints", is_flag=True, help="also fetch the job's checkpoints, into DIR/checkpoints")
@click.option("--force", is_flag=True, help="add the files to a DIR that is not empty (same names are replaced; "
              "nothing else is removed)")
@_handle_errors
def download(job_id: str, directory: str | None, checkpoints: bool, force: bool) -> None:
    """Fetch a finished job's model into DIR (default ./JOB-model, named by the full job id).

    Works for every provider: SageMaker's model.tar.gz is unpacked (links and paths that leave DIR are refused),
    Vertex AI's model folder is copied from Cloud Storage, a local job's model dir is copied. Each file's size (and
    MD5 where the store states one) is checked. Nothing is written at DIR until the whole download is there; then
    `train.model: DIR` (or `train.model: job:JOB`) starts a new fine-tune from it."""
    from cloudtune import api

    from cloudtune.states import is_terminal
    from cloudtune.sweep import objective_text

    job = api.get_job(job_id)
    target = job.download(directory, checkpoints=checkpoints, force=force)
    if not job.is_sweep:
        click.echo(f"downloaded the model of {job.job_id} to {target}")
        return
    info = job.info()  # a sweep's model is its best trial's: say which, and that a running sweep's may change
    best = info.get("best_trial") or {}
    metric = (info.get("objective") or {}).get("metric", "objective")
    click.echo(f"downloaded the model of {job.job_id}, its best trial {best.get('number', '?')} "
               f"({best.get('job_id', '-')}, {metric}={objective_text(best.get('objective'))}), to {target}")
    if not is_terminal(info["state"]):
        click.echo(f"note: the sweep is still {info['state']}: this is its best trial so far; a later trial may beat "
                   f"it (download again when `cloudtune status {job.job_id}` shows it ended)")


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="where to write the page (default ./JOB-report.html)")
@_handle_errors
def report(job_id: str, output: str | None) -> None:
    """Write a self-contained HTML report of a job: verdict, loss, learning rate and throughput charts, health
    checks, hyperparameters, data and cost.

    Read from the job's log (as `cloudtune logs` fetches it, for every provider), its record and, when its model dir
    is on this machine, metrics.json and the model card. Prints the page's path; the charts are also written as
    .svg files in PAGE-plots/ beside it. Works on a running job too (the report of the log so far)."""
    from cloudtune import api
    from cloudtune.errors import JobNotFound
    from cloudtune.report import write_report

    try:
        files = write_report(api.get_job(job_id), output)
    except JobNotFound as exc:
        click.echo(f"error: {exc.message}; `cloudtune list` shows the job ids", err=True)
        sys.exit(2)
    click.echo(str(files.html))
    where = f"; {len(files.plots)} chart(s) also in {files.plots[0].parent}" if files.plots else ""
    click.echo(f"{files.verdict}{where}", err=True)


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB]...")
@click.option("--older-than", metavar="DURATION", help="finished local jobs that ended this long ago, e.g. 7d, 12h")
@click.option("--all", "all_", is_flag=True, help="every finished local job")
@click.option("--with-model", is_flag=True, help="remove the trained model too (kept by default)")
@click.option("--dry-run", is_flag=True, help="say what would be removed, and remove nothing")
@click.option("--json", "as_json", is_flag=True)
@_handle_errors
def clean(job_ids: tuple[str, ...], older_than: str | None, all_: bool, with_model: bool, dry_run: bool,
          as_json: bool) -> None:
    """Remove finished local jobs' files (input, code and checkpoint copies), keeping each job's state, logs and
    model. A job that still runs is never touched."""
    from cloudtune.local.clean import clean_jobs

    results = clean_jobs(list(job_ids), older_than=older_than, all_=all_, with_model=with_model, dry_run=dry_run)
    if as_json:
        _emit_json(results)
        return
    verb = "would remove" if dry_run else "removed"
    for r in results:
        click.echo(f"{r['job_id']}: " + (f"skipped ({r['skipped']})" if r["skipped"] else f"{verb} {r['removed_bytes'] / 1e6:.1f} MB"))
    total = sum(r["removed_bytes"] for r in results)
    click.echo(f"{verb} {total / 1e6:.1f} MB from {sum(1 for r in results if not r['skipped'])} job(s)")


# ------------------------------------------------------------------------------------------- reference
@main.command()
@click.option("--provider", "-p", type=click.Choice(["aws", "gcp", "azure"]), default=None)
@click.option("--accelerator", "-a", default=None, help="e.g. H100, L4, TPU-v5e")
@click.option("--json", "as_json", is_flag=True)
@_handle_errors
def catalog(provider: str | None, accelerator: str | None, as_json: bool) -> None:
    """Show accelerators and the instance types each provider offers for them, with prices."""
    from dataclasses import asdict

    from cloudtune.catalog import load_catalog, render_table

    cat = load_catalog()
    offers = cat.offers(provider=provider, accelerator=accelerator)  # `-a A100` lists each A100 part
    if not offers and provider and accelerator:  # say who has it, rather than print an empty table
        from cloudtune.catalog import CatalogError

        name = cat.normalize(accelerator)
        others = cat.providers_with(name)
        raise CatalogError(f"{provider} offers no {name}" + (f"; {', '.join(others)} do" if len(others) > 1 else
                                                             f"; {others[0]} does" if others else ""),
                           fix=f"cloudtune catalog --accelerator {name}" if others else "cloudtune catalog")
    if as_json:
        _emit_json({"as_of": cat.as_of, "offers": [asdict(o) for o in offers]})
        return
    click.echo(render_table(offers))
    click.echo(f"\nprices: on-demand and spot list prices in USD per hour, as of {cat.as_of}")


@main.command()
@_handle_errors
def schema() -> None:
    """Print the JSON Schema of job.yaml (point your editor's YAML plugin at it)."""
    from cloudtune.spec import json_schema

    _emit_json(json_schema())


@main.command()
@click.argument("path", default="job.yaml")
@click.option("--force", is_flag=True, help="overwrite an existing file")
@_handle_errors
def init(path: str, force: bool) -> None:
    """Write a commented job.yaml to start from: at PATH, or at PATH/job.yaml when PATH is a directory
    (or ends with /). Missing parent directories are created."""
    from importlib.resources import files

    from cloudtune.errors import InvalidInput

    template = files("cloudtune").joinpath("templates/job.yaml").read_text()
    target = Path(path)
    try:
        target = _init_target(path)
        if target.exists() and not force:
            raise InvalidInput(f"{target} exists", fix="pass --force to overwrite it, or give another path")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template)
    except OSError as exc:
        raise InvalidInput(f"cannot write {target}: {exc.strerror or exc}",
                           fix="choose a path in a directory you can write to") from None
    click.echo(f"wrote {target}; edit it, then `cloudtune validate {target}`")


def _init_target(path: str) -> Path:
    """Where `init PATH` writes: PATH/job.yaml for a directory or a path ending in a separator, else PATH."""
    import os

    from cloudtune.errors import InvalidInput
    from cloudtune.spec import path_problem

    problem = path_problem(os.path.abspath(path)) if path else "is empty"
    if problem:
        raise InvalidInput(f"the path {path!r} {problem}", fix="give a shorter path, e.g. job.yaml or mydir/")
    target = Path(path)
    if path.endswith(("/", os.sep)) or target.is_dir():
        target = target / "job.yaml"
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory", fix="give a file path, e.g. job.yaml")
    return target


if __name__ == "__main__":
    main()
