"""The public Python API: plan(), launch(), get_job(), list_jobs() and the Job handle.

The CLI is a thin layer over these functions; MLOps scripts call them directly.

Over ~500 lines on purpose: the whole public surface a script author reads (plan, launch, resume, the Job and sweep
handles, lookups) in one module; the steps it calls (kit, launchers, store, sweeps) live in their own modules.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloudtune.catalog import load_catalog
from cloudtune.errors import CloudtuneError, InvalidInput, JobFailed
from cloudtune.jobinputs import with_model_input
from cloudtune.jobmodel import resolve_job_model
from cloudtune.kit.retry import CloudError, CreateUnconfirmed
from cloudtune.kit.sweep import shown_values
from cloudtune.launcher import JobRef, Launcher, get_launcher
from cloudtune.memory_check import plan_memory, sweep_memory
from cloudtune.plan import Plan
from cloudtune.preflight.sweep import check_sweep_values
from cloudtune.secretfiles import secret_notes
from cloudtune.settings import provider_settings
from cloudtune.spec import JobSpec, apply_overrides, load_spec, resolve_paths, validate_spec
from cloudtune.spec.sweep import largest_values
from cloudtune.specchecks import check_spec
from cloudtune.states import ACTIVE, TERMINAL, JobState, is_terminal
from cloudtune.store import JobRecord, JobStore
import cloudtune.sweep as sweeps

SpecLike = JobSpec | dict[str, Any] | str | os.PathLike[str]


def _launch_alive(extra: dict[str, Any]) -> bool:
    """Whether the process that recorded a launch may still be making it: its pid is alive on this host (on another
    host, it is taken to be alive for an hour after the record)."""
    import socket

    pid = extra.get("launch_pid")
    if extra.get("launch_host") != socket.gethostname():
        return time.time() - float(extra.get("launch_at", 0) or 0) < 3600
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_suffix(now: float | None = None) -> str:
    """The per-launch job-name suffix: UTC time + 4 random hex digits (made once, reused by retries)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{_random.token_hex(2)}"


def _kwarg_overrides(overrides: dict[str, Any]) -> list[str]:
    import json

    return [f"{k.replace('__', '.')}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]


def load(spec: SpecLike, overrides: list[str] | None = None) -> tuple[JobSpec, str | None]:
    """Any spec form -> (validated JobSpec, spec path or None)."""
    overrides = overrides or []
    if isinstance(spec, JobSpec):
        if overrides:
            data = apply_overrides(spec.model_dump(mode="json", exclude_unset=True), overrides)
            return validate_spec(data, base_dir=Path.cwd(), overrides=overrides), None
        return resolve_paths(spec, Path.cwd()), None
    if isinstance(spec, dict):
        return validate_spec(apply_overrides(spec, overrides), base_dir=Path.cwd(), overrides=overrides), None
    return load_spec(spec, overrides), str(Path(spec).resolve())


def prepare(spec: SpecLike, provider: str, overrides: list[str] | None = None) -> tuple[JobSpec, str | None]:
    """Load a spec and make it ready for `provider`'s plan: the plan-side checks (provider names, a `job:` model:
    `cloudtune.specchecks.check_spec`) and the `job:` model resolved from the job store. Returns (JobSpec, the spec
    file's path or None); raises InvalidInput (exit 2) at the field's line."""
    job_spec, spec_path = load(spec, overrides)
    return _checked(job_spec, provider), spec_path


def _checked(job_spec: JobSpec, provider: str) -> JobSpec:
    check_spec(job_spec, JobStore.lookup)
    return resolve_job_model(job_spec, provider, JobStore.lookup)


def _bundle_for(spec: JobSpec):  # -> Bundle | None
    if spec.command is None:
        return None
    from cloudtune.bundle import build_bundle  # a command job only: off the dry run's start-up path

    return build_bundle(Path(spec.code), include=spec.include)


def _settings(launcher: Launcher, spec: JobSpec) -> Any:
    return provider_settings(launcher.name, spec, launcher.settings_model)


def _compile(spec: SpecLike, provider: str, launcher: Launcher | None, suffix: str | None,
             overrides: list[str]) -> tuple[Plan, Launcher, str | None]:
    """Load, validate and plan: (Plan, the launcher that made it, the spec file's path or None)."""
    job_spec, spec_path = load(spec, overrides)
    launcher = launcher or get_launcher(provider)
    job_spec = _checked(job_spec, launcher.name)
    if job_spec.sweep is not None:  # each value of the sweep meets a plain job's plan checks, before any plan is made
        check_sweep_values(with_model_input(job_spec, launcher.name))
    bundle = _bundle_for(job_spec)
    compiled = launcher.plan(job_spec, _settings(launcher, job_spec), suffix=suffix or make_suffix(), bundle=bundle)
    if job_spec.train is not None:  # every provider's plan: the memory estimate per GPU, and the refusal of a misfit
        compiled = _with_memory(compiled, job_spec)
    meaning = _accelerator_note(job_spec)
    if meaning:  # `A100:8`: say which part was chosen
        compiled = replace(compiled, notes=(*compiled.notes, meaning))
    if bundle is not None:  # every launcher's plan says what the code bundle left out
        from cloudtune.bundle import left_out_note  # a command job only

        note = left_out_note(bundle)
        compiled = replace(compiled, notes=(*compiled.notes, *([note] if note else [])))
    # credential-like env values, and what each local input dir (a local model too) leaves out: as `validate` says
    secret = secret_notes(job_spec.env, with_model_input(job_spec, launcher.name).inputs)
    if secret:
        compiled = replace(compiled, notes=(*compiled.notes, *secret))
    return compiled, launcher, spec_path


def _with_memory(compiled: Plan, job_spec: JobSpec) -> Plan:
    """`compiled` with the memory section of a train job (`plan_memory`, which refuses a misfit): of the job itself,
    or of a sweep's memory-heaviest trial (`cloudtune.memory_check.sweep_memory`), with a note naming that trial's
    values where they are not those of the largest trial the plan shows."""
    if job_spec.sweep is None:
        return replace(compiled, memory=plan_memory(job_spec, compiled.provider, compiled.instance_type))
    memory, values = sweep_memory(job_spec, compiled.provider, compiled.instance_type)
    notes = compiled.notes
    if values != largest_values(job_spec.sweep):
        notes = (*notes, f"sweep: the memory estimate and check are those of the memory-heaviest trial "
                         f"({shown_values(values)})")
    return replace(compiled, memory=memory, notes=notes)


def _accelerator_note(job_spec: Any) -> str | None:
    """Which part a family name in `resources.accelerator` means (cloudtune.catalog.Catalog.meaning_note)."""
    if job_spec.resources.accelerator == "cpu":
        return None
    return load_catalog().meaning_note(job_spec.resources.accelerator)


def plan(spec: SpecLike, provider: str = "local", *, launcher: Launcher | None = None, suffix: str | None = None,
         overrides: list[str] | None = None, **kw_overrides: Any) -> Plan:
    """Compile a spec for a provider without submitting anything (the dry run)."""
    return _compile(spec, provider, launcher, suffix, (overrides or []) + _kwarg_overrides(kw_overrides))[0]


class Job:
    """A handle on a submitted job; every call reads the provider's current view."""

    def __init__(self, record: JobRecord, launcher: Launcher, store: JobStore) -> None:
        self._record = record
        self._launcher = launcher
        self._store = store

    @property
    def job_id(self) -> str:
        return self._record.job_id

    @property
    def provider(self) -> str:
        return self._record.provider

    @property
    def record(self) -> JobRecord:
        """The store's record of the job as last read or written by this handle."""
        return self._record

    @property
    def model_uri(self) -> str | None:
        return self._record.model_uri

    def ref(self) -> JobRef:
        r = self._record
        return JobRef(r.provider, r.job_id, r.native_id or r.job_id, r.console_url, r.model_uri, dict(r.extra))

    def status(self) -> JobState:
        """The job's state: pending | running | succeeded | failed | cancelled.

        Asks the launcher until the job has ended; a job that ended without its failure reason in the store (a
        detached job, whose outcome the local supervisor recorded) is asked once more for it. What the launcher
        says is written back (state, failure reason) without ever moving an ended job back to a running state.
        """
        record = self._confirm()
        if record.state in TERMINAL and (record.state == JobState.SUCCEEDED or "failure_reason" in record.extra):
            return record.state
        if record.extra.get("launch") == "unconfirmed":
            return record.state  # its launch is still under way: nothing to ask yet
        st = self._launcher.status(self.ref())
        extra: dict[str, Any] = {}
        if st.exit_code is not None and st.exit_code != record.extra.get("exit_code"):
            extra["exit_code"] = st.exit_code  # read by triage(): the exit says some causes by itself
        if st.failure_reason and st.failure_reason != record.extra.get("failure_reason"):
            extra["failure_reason"] = st.failure_reason
        elif st.state in TERMINAL and st.state != JobState.SUCCEEDED and "failure_reason" not in record.extra:
            extra["failure_reason"] = st.failure_reason  # asked once: None is the answer
        for key, value in (("started_at", st.started_at), ("ended_at", st.ended_at), ("billable_seconds", st.billable_s)):
            if value is not None and value != record.extra.get(key):
                extra[key] = value  # the times the provider reports: duration and cost (cloudtune.jobprogress)
        if st.state != record.state or extra:
            self._record = self._store.record_status(self.job_id, st.state, **extra)
        return self._record.state

    def _confirm(self) -> JobRecord:
        """A launch recorded before its create call and not seen since (`submit`) is looked up on the provider by its
        plan's name (`launcher.find`): found, the record gets the provider's handle; not found once the launching
        process has ended, the job is marked failed ("never created"); while that process still runs, it stays
        pending. Returns the (updated) record."""
        r = self._record
        find = getattr(self._launcher, "find", None)
        if r.extra.get("launch") != "unconfirmed" or r.plan is None or find is None:
            return r
        ref = find(Plan.from_dict(r.plan))
        if ref is not None:
            self._record = _confirmed(r, ref, self._store)
        elif not _launch_alive(r.extra):
            reason = (f"the launch ended before {r.provider} made the job (no job named {r.job_id} there): nothing "
                      f"runs and nothing is billed")
            self._record = self._store.record_status(r.job_id, JobState.FAILED, launch="never created", failure_reason=reason)
        return self._record

    def progress(self) -> dict[str, Any]:
        """What the job reports about its training (the status-file fields of cloudtune.contracts.progress): a local
        job's status file; a cloud job's log, read through its launcher (once it has ended, read once and kept in
        the store). {} when nothing is reported yet; a log that cannot be read gives {"note": why}."""
        import cloudtune.jobprogress as jobprogress  # off the dry run's start-up path

        r = self._record
        if r.provider == "local":
            return jobprogress.local_progress(r)
        if r.state in TERMINAL and isinstance(r.extra.get("reported"), dict):
            return dict(r.extra["reported"])
        try:
            found = jobprogress.progress_from_log(self.logs(follow=False))
        except Exception as exc:  # noqa: BLE001 - status must not fail for a log it cannot read
            return {"note": f"the log could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"}
        if r.state in TERMINAL:
            self._record = self._store.record_status(r.job_id, r.state, reported=found)
        return found

    def summary(self, state: str | None = None) -> dict[str, Any]:
        """Start and end (ISO-8601), elapsed or duration (s), progress, final metrics, main metric and cost (USD,
        cloudtune.kit.cost.job_cost_usd) of the job: see `cloudtune.jobprogress.summarize`."""
        from cloudtune.jobprogress import summarize  # off the dry run's start-up path

        state = state or self.status()
        progress = self.progress()
        view = summarize(self._record, state, progress)
        if progress.get("note"):
            view["note"] = progress["note"]
        return view

    def warnings(self) -> list[str]:
        """What the outcome should not hide: a job that succeeded with nothing in its model dir (checked where the
        model dir is a local directory)."""
        r = self._record
        if r.state != JobState.SUCCEEDED or not r.model_uri or "://" in r.model_uri:
            return []
        path = Path(r.model_uri)
        if path.is_dir() and next(path.iterdir(), None) is None:
            return [f"nothing was written to the model dir {path} ($CLOUDTUNE_MODEL_DIR); files the job wrote "
                    f"elsewhere are lost when its container ends"]
        return []

    @property
    def is_sweep(self) -> bool:
        """Whether this is a sweep (its trials: `trials()`)."""
        return sweeps.is_sweep(self._record)

    def trials(self) -> list[Any]:
        """A sweep's trials (cloudtune.sweeptrials.Trial: parameters, state, objective, ...), best first; [] for a job
        that is not a sweep."""
        if not self.is_sweep:
            return []
        return sweeps.trials(self._record, self._launcher, self._store,
                            lambda job_id: Job(self._store.get(job_id), self._launcher, self._store))

    def info(self) -> dict[str, Any]:
        state = self.status()
        r = self._record
        if self.is_sweep:
            return {"job_id": r.job_id, "provider": r.provider, "name": r.name, "state": state,
                    "model_uri": self._record.model_uri, "native_id": r.native_id, "console_url": r.console_url,
                    "created_at": r.created_at, "failure_reason": self._record.extra.get("failure_reason"),
                    "warnings": [], **self.summary(state), **sweeps.view(self._record, self.trials())}
        return {
            "job_id": r.job_id,
            "provider": r.provider,
            "name": r.name,
            "state": state,
            "model_uri": r.model_uri,
            "native_id": r.native_id,
            "console_url": r.console_url,
            "created_at": r.created_at,
            "failure_reason": r.extra.get("failure_reason"),
            "cause": self.triage() if state == JobState.FAILED else None,
            "warnings": self.warnings(),
            **self.summary(state),
        }

    def triage(self) -> dict[str, str] | None:
        """A failed job's cause: {cause, line, fix} from `cloudtune.kit.triage.classify` over its exit code, the
        failure reason and the last lines of its log (read once, then kept in the store; nothing but the cause,
        the line and the fix is kept). None unless the job failed. Never raises for a log that cannot be read: the
        cause then comes from the exit and the reason alone, with a `note` saying so (and is not kept)."""
        from cloudtune.kit.triage import classify, tail  # off the dry run's start-up path

        r = self._record
        if r.state != JobState.FAILED:
            return None
        if isinstance(r.extra.get("triage"), dict):
            return dict(r.extra["triage"])
        note = None
        try:
            text = tail(self.logs(follow=False))
        except Exception as exc:  # noqa: BLE001 - status must not fail for a log it cannot read
            text, note = "", f"the log could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        fixes = getattr(self._launcher, "triage_fixes", {})  # the cloud's own words for a fix (its quotas, registries)
        found = classify(r.extra.get("exit_code"), text, fixes, r.extra.get("failure_reason")).for_job(r.job_id)
        result = found.to_dict()
        if note:
            return {**result, "note": note}
        self._record = self._store.record_status(r.job_id, r.state, triage=result)
        return result

    def logs(self, follow: bool = False) -> Iterator[str]:
        self._confirm()
        return self._launcher.logs(self.ref(), follow=follow)

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> JobState:
        """Block until the job ends; returns its final state. TimeoutError after `timeout` seconds.

        On a provider that restarts no job itself (its launcher's `relaunches_preempted`: Azure ML), a failed attempt
        that was preempted or hit an infrastructure failure is launched again while retries are left (`_relaunch`),
        and this handle follows the new attempt."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while (state := self.status()) not in TERMINAL:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.job_id} still {state} after {timeout} s")
                time.sleep(poll)
            if state != JobState.FAILED or not self._relaunch():
                return state

    def _relaunch(self) -> bool:
        """Launch the failed attempt again as a new job that resumes from its newest checkpoint, when its launcher
        relaunches preempted jobs, its spec's `retries` are not spent (`extra["attempt"]` counts from 1) and its
        triage says preempted or an infrastructure failure (never bad input, divergence or the job's own error).
        Returns whether it did; this handle then follows the new job."""
        import sys

        r = self._record
        retries = int(((r.plan or {}).get("spec") or {}).get("retries") or 0)
        attempt = int(r.extra.get("attempt") or 1)
        if not getattr(self._launcher, "relaunches_preempted", False) or attempt > retries or r.plan is None:
            return False
        cause = (self.triage() or {}).get("cause")
        if cause not in ("preempted", "collective_timeout"):
            return False
        plan_ = resume_plan(self._launcher.retry_plan(Plan.from_dict(r.plan), attempt + 1), self._launcher, r)
        print(f"[cloudtune] {r.job_id} failed ({cause}): launching it again as {plan_.job_name} (retry {attempt} of "
              f"{retries}), resuming from its newest checkpoint", file=sys.stderr, flush=True)
        job = submit(plan_, launcher=self._launcher, spec_path=r.spec_path, store=self._store, resumed_from=r.job_id)
        self._store.record_status(r.job_id, r.state, resumed_by=job.job_id)
        self._record = self._store.record_status(job.job_id, job.record.state, attempt=attempt + 1)
        return True

    def cancel(self) -> None:
        """Stop the job (a launch not seen yet is looked up first: `_confirm`; one the provider never made has
        nothing to stop). A sweep that has ended (its driver died) with trial jobs still running has those stopped
        (`running_trials`); a running sweep's driver stops its own trials."""
        if self._confirm().extra.get("launch") in ("unconfirmed", "never created"):
            return
        self._launcher.cancel(self.ref())
        if is_terminal(self._record.state):
            for trial in self.running_trials():
                trial.cancel()

    def running_trials(self) -> list["Job"]:
        """A sweep's trial jobs in the store that still run: a local sweep's trials run under their own supervisors,
        so they outlive a driver that died (the sweep is then failed while they go on). [] for a job that is not a
        sweep, or a cloud sweep (whose service stops its own trials)."""
        if not self.is_sweep:
            return []
        trials = [Job(c, self._launcher if c.provider == self.provider else get_launcher(c.provider), self._store)
                  for c in self._store.children("sweep", self.job_id)]
        return [t for t in trials if not is_terminal(t.status())]

    def download(self, dest: str | os.PathLike[str] | None = None, *, checkpoints: bool = False,
                 force: bool = False) -> Path:
        """Fetch this job's model (and, with `checkpoints`, its checkpoints into `<dest>/checkpoints`) from wherever
        its provider put it; returns the directory it is in (`dest`, default `default_download_dir`).

        The job must have succeeded (asked of the provider when the store does not know it yet) and have a model
        location. `dest` must be missing or empty unless `force` (then files of the same name are replaced and
        nothing else is removed). The download goes to a temp dir beside `dest`, renamed onto it at the end: an
        interrupted download leaves nothing at `dest`. What is checked: see `cloudtune.kit.download`. Each refusal
        is an InvalidInput (exit 2) with its fix, raised before anything is fetched."""
        from cloudtune.kit.download import check_target, into_place  # off the dry run's start-up path

        target = Path(os.path.abspath(dest if dest is not None else default_download_dir(self.job_id)))
        if self.is_sweep:  # the sweep's model is its best trial's
            return self._best_trial(target).download(target, checkpoints=checkpoints, force=force)
        check_target(target, force)
        state = self.status()
        if state != JobState.SUCCEEDED:
            fix = (f"wait for it to end (`cloudtune logs -f {self.job_id}`), then download again"
                   if state in ACTIVE else
                   f"`cloudtune logs {self.job_id}` shows what happened; a model is downloaded once its job succeeded")
            raise InvalidInput(f"job {self.job_id} is {state}, not succeeded: there is no finished model to download", fix=fix)
        if not self.model_uri:
            raise InvalidInput(f"job {self.job_id} has no model location recorded",
                               fix=f"`cloudtune status {self.job_id}` shows what the store knows about it")
        fetch = getattr(self._launcher, "download", None)
        if fetch is None:
            raise InvalidInput(f"the {self.provider!r} launcher cannot download a model",
                               fix=f"upgrade the plugin, or fetch {self.model_uri} with the provider's own tools")
        with into_place(target, force=force) as tmp:
            fetch(self.ref(), tmp, checkpoints=checkpoints)
        return target

    def _best_trial(self, target: Path) -> "Job":
        """The handle of a sweep's best trial (a job of the store, or of the sweep's cloud); InvalidInput when none
        has finished with its objective."""
        state = self.status()
        trials = self.trials()  # one read: on a cloud each costs the service's trial listing
        best = sweeps.best_job_id(self._record, trials)
        if best is None:
            raise InvalidInput(f"sweep {self.job_id} ({state}) has no trial that finished with its objective: there is "
                               "no best model to download", fix=f"`cloudtune status {self.job_id}` lists its trials")
        return get_job(best, store=self._store) if self.provider == "local" else Job(
            JobRecord(job_id=best, provider=self.provider, name=best, state=JobState.SUCCEEDED, created_at=0.0,
                      updated_at=0.0, model_uri=next((t.model_uri for t in trials if t.job_id == best), None)),
            self._launcher, self._store)

    def raise_for_state(self) -> None:
        if self.status() == JobState.FAILED:
            raise JobFailed(f"job {self.job_id} failed: {self._record.extra.get('failure_reason') or 'see its logs'}",
                            fix=f"cloudtune logs {self.job_id}")


def launch_record(plan_: Plan, spec_path: str | None) -> JobRecord:
    """The store record written before the provider's create call: the job id is the plan's deterministic name, and
    `extra["launch"] = "unconfirmed"` with this process's host and pid says that nobody has seen the job yet."""
    import socket

    now = time.time()
    return JobRecord(job_id=plan_.job_name, provider=plan_.provider, name=plan_.spec.get("name", plan_.job_name),
                     state=JobState.PENDING, created_at=now, updated_at=now, model_uri=plan_.model_uri, spec_path=spec_path,
                     plan=plan_.to_dict(), extra={"launch": "unconfirmed", "launch_host": socket.gethostname(),
                                                  "launch_pid": os.getpid(), "launch_at": now})


def _confirmed(record: JobRecord, ref: JobRef, store: JobStore) -> JobRecord:
    """Write what the provider said about a job it made (its handle, console, model) onto the launch's record, merged
    into what the store holds now (`record` may be a stale copy: another process may have added keys since)."""
    extra = {**{k: v for k, v in ref.extra.items() if k != "job_dir"}, "launch": "confirmed"}
    return store.merge(record.job_id, extra, ("launch_host", "launch_pid", "launch_at"), native_id=ref.native_id,
                       model_uri=ref.model_uri, console_url=ref.console_url, job_dir=ref.extra.get("job_dir"))


def submit(plan_: Plan, *, launcher: Launcher | None = None, spec_path: str | None = None, store: JobStore | None = None,
           resumed_from: str | None = None) -> Job:
    """Consume a Plan: record the launch, submit it, and record what the provider made.

    The record is written BEFORE the provider's create call, under the plan's deterministic job name, so that a
    launch killed between the create and the record still leaves a job `cloudtune list` shows and `cancel` stops
    (the next `status`/`list` looks it up: `Job.status`). A create whose answer was lost (CreateUnconfirmed)
    keeps the record and says so; any other failure removes it (nothing was made)."""
    launcher = launcher or get_launcher(plan_.provider)
    store = store or JobStore()
    record = launch_record(plan_, spec_path)
    if resumed_from:
        record.extra["resumed_from"] = resumed_from
    try:
        store.add(record)  # StoreNotWritable (a full disk, a read-only store): nothing is created unrecorded
    except sqlite3.IntegrityError:
        record = store.get(plan_.job_name)  # already recorded by an earlier try of this same plan
    try:
        ref = launcher.submit(plan_)
    except CreateUnconfirmed as exc:
        raise CloudError(f"{exc.message}; the job may have been created: cloudtune status {record.job_id}",
                         fix=f"run `cloudtune status {record.job_id}` (it looks the job up by its name); launching "
                             f"the same spec again adopts that job instead of paying for a second one") from None
    except Exception:
        with contextlib.suppress(CloudtuneError):  # the launcher's error is the one to report
            store.discard_launch(record.job_id)  # the launch failed before the provider made anything
        raise
    return Job(_confirmed(record, ref, store), launcher, store)


def _earlier_launch(plan_: Plan, launcher: Launcher, store: JobStore) -> Job | None:
    """The job of an earlier launch of the same plan (same spec and uploads) whose create answer was lost, when the
    provider has it: a relaunch follows that job instead of paying for a second one. Launches the provider does
    not have are marked failed on the way (`Job.status`)."""
    def key(plan: dict[str, Any]) -> tuple[Any, ...]:
        return (plan.get("spec"), sorted(u.get("sha256", "") for u in plan.get("uploads") or ()))

    wanted = key(plan_.to_dict())
    for record in store.unconfirmed(plan_.provider):
        if record.plan is None or key(record.plan) != wanted:
            continue
        if record.extra.get("launch_pid") != os.getpid() and _launch_alive(record.extra):
            continue  # another process is launching it now: two launches at once make two jobs, as asked
        job = Job(record, launcher, store)
        job.status()
        if job.record.extra.get("launch") == "confirmed":
            import sys

            print(f"[cloudtune] an earlier launch of this spec made {job.job_id} (its answer was lost): following it "
                  f"instead of launching a second job", file=sys.stderr, flush=True)
            return job
    return None


def launch(spec: SpecLike, provider: str = "local", dry_run: bool = False, *, launcher: Launcher | None = None,
           overrides: list[str] | None = None, resume: str | None = None, **kw_overrides: Any) -> Job | Plan:
    """Plan, then (unless `dry_run`) submit. Returns the Plan on a dry run, else a Job handle (not waited on).
    A launch of the same spec as an earlier one whose create answer was lost returns that job when the provider
    has it (`_earlier_launch`): never a second paid job. With `resume` (a job id or unique prefix), the new job
    starts from that job's newest checkpoint on the same provider (`resume_plan`); the store links the two
    (`extra["resumed_from"]` on the new job, `extra["resumed_by"]` on the earlier one)."""
    compiled, launcher, spec_path = _compile(spec, provider, launcher, None, (overrides or []) + _kwarg_overrides(kw_overrides))
    earlier = None
    if resume is not None and "sweep" in compiled.spec:
        return _resume_sweep(resume, launcher, dry_run, compiled)
    if resume is not None:
        if dry_run:
            earlier = JobStore.lookup(resume)  # read-only: a dry run writes nothing
        else:  # the provider's view: a detached job may have ended since the store last heard of it
            resumed = get_job(resume)
            resumed.status()
            earlier = resumed.record
        compiled = resume_plan(compiled, launcher, earlier)
    if dry_run:
        return compiled
    store = JobStore()
    if earlier is None:
        found = _earlier_launch(compiled, launcher, store)
        if found is not None:
            return found
    job = submit(compiled, launcher=launcher, spec_path=spec_path, store=store,
                 resumed_from=earlier.job_id if earlier else None)
    if earlier is not None:
        store.record_status(earlier.job_id, earlier.state, resumed_by=job.job_id)
    return job


def _resume_sweep(resume: str, launcher: Launcher, dry_run: bool, compiled: Plan) -> "Job | Plan":
    """`launch(sweep_spec, resume=SWEEP)`: the rest of an ended sweep on its own record (its launcher's
    `resume_sweep`); finished trials are not run again. InvalidInput when SWEEP is not a sweep of this provider, or
    its sweep section differs from the spec's."""
    store = JobStore()
    earlier = JobStore.lookup(resume) if dry_run else store.get(resume)
    if not sweeps.is_sweep(earlier) or earlier.provider != compiled.provider:
        raise InvalidInput(f"--resume {earlier.job_id}: that is not a {compiled.provider} sweep",
                           fix="give the id of the sweep to continue (`cloudtune list` shows them), or launch without --resume")
    launched = (earlier.plan or {}).get("spec") or {}
    differ = sorted(k for k in set(launched) | set(compiled.spec) if k != "name" and launched.get(k) != compiled.spec.get(k))
    if differ:  # the rest of the trials run with the spec the sweep was launched with: a change would be ignored
        raise InvalidInput(f"--resume {earlier.job_id}: the spec's {', '.join(differ)} "
                           f"{'differs' if len(differ) == 1 else 'differ'} from that sweep's, and a resumed sweep runs "
                           "its remaining trials with the spec it was launched with",
                           fix="resume with the spec the sweep was launched with, or launch a new sweep without --resume")
    if dry_run:
        return replace(compiled, job_name=earlier.job_id, notes=(
            *compiled.notes, f"resumes sweep {earlier.job_id}: its finished trials are not run again"))
    resume_sweep = getattr(launcher, "resume_sweep", None)
    if resume_sweep is None:
        raise InvalidInput(f"--resume: the {launcher.name!r} launcher cannot resume a sweep", fix="launch a new sweep")
    job = Job(earlier, launcher, store)
    job.status()  # the provider's view first: a sweep whose driver died is seen as failed
    ref = resume_sweep(job.ref())
    record = store.reopen(earlier.job_id, resumed_at=time.time())
    return Job(_confirmed(record, ref, store), launcher, store)


def resume_plan(plan_: Plan, launcher: Launcher, earlier: JobRecord) -> Plan:
    """`plan_` made to start from `earlier`'s newest checkpoint by its launcher's `resume(plan, ref)`. InvalidInput
    (exit 2) when `earlier` ran on another provider, has not ended, succeeded (nothing to resume), has no checkpoint
    location recorded, or the launcher cannot resume."""
    job_id = earlier.job_id
    if earlier.provider != plan_.provider:
        raise InvalidInput(f"--resume {job_id}: that job ran on {earlier.provider}, not {plan_.provider}",
                           fix=f"launch with --provider {earlier.provider} (a job resumes on the cloud that holds its "
                               "checkpoints)")
    if earlier.state in ACTIVE or earlier.extra.get("launch") == "unconfirmed":
        raise InvalidInput(f"--resume {job_id}: that job is {earlier.state}, not stopped",
                           fix=f"stop it first (`cloudtune cancel {job_id}`), or follow it (`cloudtune logs -f {job_id}`)")
    if earlier.state == JobState.SUCCEEDED:
        raise InvalidInput(f"--resume {job_id}: that job succeeded; there is nothing to resume",
                           fix=f"launch without --resume, or train on from its model (train.model: job:{job_id})")
    if not earlier.extra.get("checkpoint_uri"):
        raise InvalidInput(f"--resume {job_id}: no checkpoint location is recorded for that job",
                           fix="launch without --resume (the job starts from step 0)")
    _same_model(plan_, earlier)
    resume = getattr(launcher, "resume", None)
    if resume is None:
        raise InvalidInput(f"--resume: the {plan_.provider!r} launcher cannot resume a job", fix="launch without --resume")
    ref = JobRef(earlier.provider, job_id, earlier.native_id or job_id, earlier.console_url, earlier.model_uri,
                 dict(earlier.extra))
    return resume(plan_, ref)


RESUME_SHAPE = ("task", "model", "base_model", "lora")
"""The train options that shape a checkpoint's weights: a resume with another value of one would load weights of
another shape (or another adapter) into the model, which fails in the job or trains the wrong thing."""


def _same_model(plan_: Plan, earlier: JobRecord) -> None:
    """InvalidInput (exit 2) when `plan_`'s train options that shape the weights (`RESUME_SHAPE`) differ from those
    `earlier` trained with; the other options (steps, learning rate, data) may change on a resume."""
    earlier_spec = (earlier.plan or {}).get("spec") or {}
    before, now = earlier_spec.get("train") or {}, plan_.spec.get("train") or {}
    if not before or not now:
        return

    def shape(spec: dict[str, Any], train: dict[str, Any], key: str) -> Any:
        value = train.get(key)  # a model in an input (a local path becomes one): where that input comes from
        return (spec.get("inputs") or {}).get(value, value) if key in ("model", "base_model") else value

    differ = [k for k in RESUME_SHAPE if shape(earlier_spec, before, k) != shape(plan_.spec, now, k)]
    if differ:
        key = differ[0]
        raise InvalidInput(f"--resume {earlier.job_id}: train.{key} differs from that job's "
                           f"({shape(earlier_spec, before, key)!r}, now {shape(plan_.spec, now, key)!r}), so its "
                           "checkpoints do not fit this model",
                           fix=f"resume with that job's train.{differ[0]}, or launch without --resume")


def get_job(job_id: str, *, launcher: Launcher | None = None, store: JobStore | None = None) -> Job:
    """A handle on a recorded job, by id or unique id prefix."""
    store = store or JobStore()
    record = store.get(job_id)
    return Job(record, launcher or get_launcher(record.provider), store)


def default_download_dir(job_id: str) -> Path:
    """Where `download` puts a job's model when no directory is given: `./<job id>-model` (in the current
    directory; the full job id, so that downloads of several jobs never meet)."""
    return Path.cwd() / f"{job_id}-model"


def download(job_id: str, dest: str | os.PathLike[str] | None = None, *, checkpoints: bool = False,
             force: bool = False, launcher: Launcher | None = None, store: JobStore | None = None) -> Path:
    """`get_job(job_id).download(dest, checkpoints=..., force=...)`: see `Job.download`."""
    return get_job(job_id, launcher=launcher, store=store).download(dest, checkpoints=checkpoints, force=force)


def list_jobs(limit: int = 50, provider: str | None = None) -> list[JobRecord]:
    return JobStore().list(limit=limit, provider=provider)
