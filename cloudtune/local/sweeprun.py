"""One local sweep's loop (see cloudtune.local.sweep): ask Optuna, start trials as local jobs, follow them, report
their intermediate values, prune, tell Optuna each result, until the budget is spent, too many trials failed or the
sweep is cancelled. The only writer of the sweep's Optuna journal."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudtune.api as api
from cloudtune.bundle import build_bundle
from cloudtune.contracts.metrics import metric_history
from cloudtune.errors import JobNotFound
from cloudtune.states import is_terminal
from cloudtune.local.launcher import LocalLauncher
from cloudtune.local.statefile import read_state, write_state
from cloudtune.local.sweep import POLL_S, log, make_study, read_sweep_file, slots, suggest
from cloudtune.plan import Plan
from cloudtune.settings import provider_settings
from cloudtune.spec import JobSpec, LocalSettings
from cloudtune.spec.sweep import trial_spec
from cloudtune.store import JobStore
from cloudtune.sweep import record_outcome

SPENT = ("COMPLETE", "PRUNED")
"""Optuna trial states that spend the budget; a failed trial spends it when its user attribute `counted` is set (a
trial cancelled with the sweep does not; one an interrupted driver left without a job stays running in the study, and
the next driver starts it: `SweepRun.adopt`)."""


@dataclass
class Running:
    """A trial being followed: Optuna's handle, the trial's job, its GPU set, the last step reported to Optuna;
    `pruned`: stopped early by the pruner; `withdrawn`: cancelled with the sweep (its values run again on resume)."""

    trial: Any
    job: Any
    slot: str | None
    reported: int = -1
    pruned: bool = False
    withdrawn: bool = False
    history: list[list[float]] = field(default_factory=list)


class SweepRun:
    def __init__(self, sweep_dir: Path) -> None:
        self.dir = sweep_dir
        config = read_sweep_file(sweep_dir)
        self.sweep_id: str = config["sweep_id"]
        self.suffix: str = config["suffix"]
        self.spec_path: str | None = config.get("spec_path")
        self.spec = JobSpec.model_validate(config["spec"])
        self.sweep = self.spec.sweep
        self.metric = self.sweep.objective.metric
        self.store = JobStore()
        self.launcher = LocalLauncher()
        self.settings = provider_settings("local", self.spec, LocalSettings)
        self.study = make_study(sweep_dir, self.spec, self.sweep_id)
        self.slots = slots(self.spec)
        self.running: dict[int, Running] = {}
        self.waiting: list[Any] = []
        self.stop = False
        self.bundle = None
        if self.spec.command is not None:
            self.bundle = build_bundle(Path(self.spec.code), include=self.spec.include)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop = True

    # ------------------------------------------------------------------ the loop
    def budget(self) -> int:
        total = self.sweep.max_trials
        return min(total, self.sweep.grid_size()) if self.sweep.algorithm == "grid" else total

    def spent(self) -> int:
        """Trials that count against the budget: finished (complete, pruned, failed), running and waiting to start."""
        done = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name in SPENT)
        return done + self.failures() + len(self.running) + len(self.waiting)

    def failures(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.state.name == "FAIL" and t.user_attrs.get("counted"))

    def run(self) -> tuple[str, str | None]:
        """Run the sweep to its end; (final state, failure reason or None)."""
        self.adopt()
        log(self.dir, f"{self.spent()} of {self.budget()} trials done or running; up to {len(self.slots)} at once")
        while True:
            if self.stop:
                self.cancel_all()
                return "cancelled", "the sweep was cancelled"
            self.poll()
            while not self.failing() and not self.stop and len(self.running) < len(self.slots) and (
                    self.waiting or self.spent() < self.budget()):
                self.start()
            failing = self.failing()
            if not self.running and (failing or (not self.waiting and self.spent() >= self.budget())):
                break
            time.sleep(POLL_S)
        return self.outcome(failing)

    def failing(self) -> bool:
        """Whether `sweep.max_failed_trials` (0: no limit) trials have failed: no trial starts any more."""
        limit = self.sweep.max_failed_trials
        return limit > 0 and self.failures() >= limit

    def outcome(self, failing: bool) -> tuple[str, str | None]:
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if failing:
            reason = f"{self.failures()} trials failed (sweep.max_failed_trials: {self.sweep.max_failed_trials})"
            log(self.dir, f"stopped: {reason}")
            return ("succeeded" if complete else "failed"), (None if complete else reason)
        if not complete:
            return "failed", "no trial finished with its objective"
        return "succeeded", None

    # ------------------------------------------------------------------ trials
    def free_slot(self) -> str | None:
        used = [r.slot for r in self.running.values()]
        for slot in self.slots:
            if slot is None or slot not in used:
                return slot
        return None

    def start(self) -> None:
        """Submit one trial as a local job: one a killed driver asked for but never started (`adopt`), else a new one
        asked of Optuna. The trial is named before its job exists, so that a driver killed at any point of this
        leaves a trial its successor either follows (the job was made) or starts (it was not)."""
        trial = self.waiting.pop(0) if self.waiting else self.study.ask()
        values = suggest(trial, self.sweep.ranges())  # a trial asked before: the values it was given then
        slot = self.free_slot()
        number = trial.number
        try:
            plan = self.trial_plan(number, values, slot)
            trial.set_user_attr("job_id", plan.job_name)
            trial.set_user_attr("cuda_visible_devices", slot)
            job = api.submit(plan, launcher=self.launcher, spec_path=self.spec_path, store=self.store)
        except Exception as exc:  # noqa: BLE001 - a trial that cannot start is a failed trial, the sweep goes on
            note = f"could not start: {type(exc).__name__}: {exc}"[:500]
            trial.set_user_attr("note", note)
            trial.set_user_attr("counted", True)
            self.study.tell(trial, state=_state("FAIL"))
            self.keep_unstarted(number, values, note)
            log(self.dir, f"trial {number} could not start: {exc}")
            return
        self.link(job, number, values, slot)
        self.running[number] = Running(trial, job, slot)
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        log(self.dir, f"trial {number} started as {job.job_id}: {shown}")

    def keep_unstarted(self, number: int, values: dict[str, Any], note: str) -> None:
        """A trial with no job of its own (it could not start) kept on the sweep's record (`extra["unstarted"]`:
        number -> values and reason), so that its status, `--json` and report list it (cloudtune.sweep.trials)."""
        try:
            record = self.store.get(self.sweep_id)
        except JobNotFound:  # a sweep dir driven without its record: nothing to list it in
            return
        unstarted = dict((record.extra or {}).get("unstarted") or {})
        unstarted[str(number)] = {"parameters": values, "note": note}
        self.store.record_status(self.sweep_id, record.state, unstarted=unstarted)

    def trial_plan(self, number: int, values: dict[str, Any], slot: str | None) -> Any:
        """The trial's local job plan (pure): the spec with its values, on its GPU set, named `<sweep>-tNN`."""
        spec = trial_spec(self.spec, values)
        if slot is not None:
            spec = spec.model_copy(update={"env": {**spec.env, "CUDA_VISIBLE_DEVICES": slot}})
        return self.launcher.plan(spec, self.settings, suffix=f"{self.suffix}-t{number:02d}", bundle=self.bundle)

    def link(self, job: Any, number: int, values: dict[str, Any], slot: str | None) -> None:
        """Mark the trial's job record as this sweep's (what `status`, `list` and `report` read); idempotent."""
        self.store.record_status(job.job_id, job.record.state, sweep=self.sweep_id, trial=number, parameters=values,
                                 cuda_visible_devices=slot)

    def adopt(self) -> None:
        """A resumed sweep: what the last driver left running. A trial whose job was made is followed again (the job
        runs on under its own supervisor) and linked to the sweep; one whose job was never made is started first,
        with the values it was given (`waiting`)."""
        import optuna

        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # Optuna's handle on a running trial, by its id
            job = self.made_job(frozen.user_attrs.get("job_id"))
            if job is None:
                self.waiting.append(trial)
                log(self.dir, f"trial {frozen.number} was never started; it starts again")
                continue
            attrs = frozen.user_attrs
            slot = attrs.get("cuda_visible_devices", job.record.extra.get("cuda_visible_devices"))
            self.link(job, frozen.number, dict(frozen.params), slot)
            reported = max((int(s) for s in frozen.intermediate_values), default=-1)
            run = Running(trial, job, slot, reported, bool(attrs.get("pruned")), bool(attrs.get("withdrawn")))
            self.running[frozen.number] = run
            if run.pruned and not is_terminal(job.status()):
                job.cancel()  # pruned by the last driver, which died before it stopped the job
            log(self.dir, f"trial {frozen.number} ({job.job_id}) followed again")

    def made_job(self, job_id: str | None) -> Any:
        """The job a trial's name leads to, or None when none was made: not named, not recorded, or recorded before a
        create that never happened (that record, "unconfirmed" or already found "never created", is removed: the
        trial's next start records it again)."""
        if not job_id:
            return None
        try:
            record = self.store.get(job_id)
        except JobNotFound:
            return None
        if record.job_id != job_id:  # get() also takes a unique prefix: -t10 must not find -t100
            return None
        if record.extra.get("launch") in ("unconfirmed", "never created") and record.plan is not None \
                and self.launcher.find(Plan.from_dict(record.plan)) is None:
            self.store.discard_launch(job_id)
            return None
        return api.get_job(job_id, launcher=self.launcher, store=self.store)

    def poll(self) -> None:
        for number, run in list(self.running.items()):
            state = run.job.status()
            self.report(run)
            if is_terminal(state):
                self.finish(number, run, state)

    def report(self, run: Running) -> None:
        """Report the trial's new intermediate values to Optuna; cancel it when the pruner says so."""
        run.history = self.history(run.job)
        for step, value in run.history:
            if step <= run.reported or not math.isfinite(value):
                continue
            run.trial.report(value, int(step))
            run.reported = int(step)
            if not run.pruned and run.trial.should_prune():
                run.pruned = True
                run.trial.set_user_attr("pruned", True)  # kept for a successor that finds the job cancelled
                log(self.dir, f"trial {run.trial.number} stopped early at step {int(step)}: {self.metric}={value:.6g} "
                    "is worse than the median of earlier trials there")
                run.job.cancel()

    def history(self, job: Any) -> list[list[float]]:
        """The trial's (step, value) pairs of the objective: its status file's history (train jobs), else the metric
        lines of its log (command jobs print them: cloudtune.contracts.metrics)."""
        progress = job.progress()
        found = (progress.get("history") or {}).get(self.metric)
        if found:
            return [[int(s), float(v)] for s, v in found if v is not None]
        return [[s, v] for s, v in metric_history(job.logs()).get(self.metric, [])]

    def objective(self, job: Any, run: Running) -> float | None:
        metrics = (job.progress().get("metrics") or {})
        value = metrics.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        return run.history[-1][1] if run.history and math.isfinite(run.history[-1][1]) else None

    def finish(self, number: int, run: Running, state: str) -> None:
        """Record the trial's end: the job store first, then Optuna (a driver killed between the two leaves the trial
        running in the journal, and its successor, following the ended job, records both again)."""
        del self.running[number]
        objective = self.objective(run.job, run) if state == "succeeded" else None
        if run.pruned:  # its objective: the last value it reported (as Optuna keeps for a pruned trial)
            objective = run.history[-1][1] if run.history else None
        self.store.record_status(run.job.job_id, state, objective=objective, intermediate=run.history,
                                 pruned=run.pruned)
        if run.pruned:
            self.study.tell(run.trial, state=_state("PRUNED"))
            shown = "pruned"
        elif objective is not None:
            self.study.tell(run.trial, objective)
            shown = f"{self.metric}={objective:.6g}"
        elif run.withdrawn or self.stop:  # cancelled with the sweep: not a failure, its values run again on resume
            self.requeue(run.trial)
            self.study.tell(run.trial, state=_state("FAIL"))
            shown = f"{state} with the sweep"
        else:
            run.trial.set_user_attr("counted", True)
            self.study.tell(run.trial, state=_state("FAIL"))
            shown = state if state != "succeeded" else f"succeeded without reporting {self.metric}"
        log(self.dir, f"trial {number} ({run.job.job_id}) ended: {shown}")

    def requeue(self, trial: Any) -> None:
        """Enqueue a withdrawn trial's values for a later driver, once: a copy already waiting (enqueued by a driver
        killed before it told the study) is not enqueued again."""
        import optuna

        params = dict(trial.params)
        waiting = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if not any(t.system_attrs.get("fixed_params") == params for t in waiting):
            self.study.enqueue_trial(params)

    def withdraw(self, run: Running) -> None:
        """Cancel a trial with the sweep; marked in the study first, so that a successor does not count it failed."""
        run.withdrawn = True
        run.trial.set_user_attr("withdrawn", True)
        run.job.cancel()

    def cancel_all(self) -> None:
        """Cancel every running trial and wait (bounded) for each to end."""
        for run in self.running.values():
            self.withdraw(run)
        deadline = time.monotonic() + 60
        while self.running and time.monotonic() < deadline:
            self.poll()
            time.sleep(POLL_S / 2)
        log(self.dir, "cancelled")

    def finish_sweep(self, state: str, reason: str | None) -> None:
        """Record the sweep's end: its state file, and its job-store record with the best trial's model."""
        record_outcome(self.store, self.sweep_id, state, reason)  # the store first: a waiter then reads the best model
        write_state(self.dir, state=state, failure_reason=reason, ended_at=time.time())
        log(self.dir, f"ended: {state}" + (f" ({reason})" if reason else ""))


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sweep_dir = Path(args[0])
    run = SweepRun(sweep_dir)
    signal.signal(signal.SIGTERM, run.request_stop)
    signal.signal(signal.SIGINT, run.request_stop)
    write_state(sweep_dir, state="running", supervisor_pid=os.getpid(), started_at=read_state(sweep_dir).get(
        "started_at") or time.time(), failure_reason=None, ended_at=None)
    try:
        state, reason = run.run()
    except Exception as exc:  # noqa: BLE001 - the sweep's outcome is recorded whatever went wrong
        state, reason = "failed", f"the sweep driver stopped: {type(exc).__name__}: {exc}"
        log(sweep_dir, reason)
        run.stop = True  # its trials end with it: none is left running unfollowed
        run.cancel_all()
    run.finish_sweep(state, reason)
    return 0 if state == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
