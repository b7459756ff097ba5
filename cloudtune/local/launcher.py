"""The local launcher: runs a job on this machine inside a faithful copy of one cloud's container contract."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput, UnsupportedSpec
from cloudtune.kit.staging import stage
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.local import starting
from cloudtune.local.planning import CAPABILITIES, LocalPlanning
from cloudtune.local.proctree import job_processes
from cloudtune.local.statefile import read_state, write_state
from cloudtune.local.sweepplan import plan_sweep, resume_sweep, start_sweep, sweep_ref
from cloudtune.plan import Plan
from cloudtune.settings import cloudtune_home
from cloudtune.spec import LocalSettings
from cloudtune.states import ACTIVE, TERMINAL, JobState

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.spec import JobSpec

STARTUP_GRACE_S = 30.0
LOCK_WAIT_S = 2.0  # how long `submit` waits for a job's lock that a `status` or `find` holds for a moment


class LocalLauncher:
    name = "local"
    capabilities = CAPABILITIES
    settings_model = LocalSettings
    planning = LocalPlanning()

    def __init__(self, home: Path | None = None) -> None:
        self._home = home

    def home(self) -> Path:
        return self._home or cloudtune_home()

    # ---------------------------------------------------------------- plan (pure)
    def plan(self, spec: "JobSpec", settings: LocalSettings, *, suffix: str, bundle: "Bundle | None" = None) -> Plan:
        """The planning template with the local steps (`cloudtune.local.planning`); a sweep's plan is its largest
        trial's, with the sweep's id and directory (`cloudtune.local.sweepplan`)."""
        if spec.sweep is not None:
            return plan_sweep(self, spec, settings, suffix=suffix, bundle=bundle)
        return self.planning.compile(spec, settings, suffix=suffix, bundle=bundle, home=self.home())

    # ---------------------------------------------------------------- submit and after
    def submit(self, plan: Plan) -> JobRef:
        """Start the plan's job under its own supervisor process. Idempotent: a job already started (being started,
        running or ended) is left as it is; one whose launch died before starting its supervisor is started now
        (cloudtune.local.starting)."""
        if "sweep" in plan.request:
            return start_sweep(plan)
        job_dir = Path(plan.request["job_dir"])
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the user's alone, as $CLOUDTUNE_HOME (store)
        give_up_at = time.monotonic() + LOCK_WAIT_S
        while True:
            with starting.locked(job_dir) as lock:
                state = read_state(job_dir)
                if state and not starting.restartable(state):
                    return self._ref(plan)  # being started, running or ended
                if lock is not None:
                    self._start(plan, job_dir, lock)
                    return self._ref(plan)
            if time.monotonic() > give_up_at:  # held all along: a launch or a supervisor is starting it
                return self._ref(plan)
            time.sleep(0.05)  # held for a moment by a `status` or `find` deciding the job's outcome

    def _start(self, plan: Plan, job_dir: Path, lock: int) -> None:
        """Stage the inputs, write the plan and the pending state, and start the supervisor, which inherits `lock`."""
        missing_secrets = [n for n in plan.request["secret_names"] if n not in os.environ]
        if missing_secrets:
            raise UnsupportedSpec(f"secrets not set in your environment: {', '.join(missing_secrets)}",
                                  fix="export them before launching locally (their values never reach the job store or logs)")
        for up in plan.uploads:
            stage(up)
        plan = self._with_free_port(plan)
        _seed_checkpoints(plan.request)
        tmp = job_dir / "plan.json.tmp"
        tmp.write_text(plan.to_json())
        os.replace(tmp, job_dir / "plan.json")
        (job_dir / "job.log").touch()
        # the supervisor adds its pid and moves on to running; the lock it inherits says it is starting until then
        write_state(job_dir, fresh=True, state=JobState.PENDING.value, **starting.launch_fields())
        subprocess.Popen(
            [sys.executable, "-m", "cloudtune.local.supervisor", str(job_dir), str(lock)],
            stdin=subprocess.DEVNULL, stdout=open(job_dir / "supervisor.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, pass_fds=(lock,),
        )

    def resume(self, plan: Plan, earlier: JobRef) -> Plan:
        """`plan` made to start from `earlier`'s newest checkpoint: submit copies the earlier job's checkpoint dir
        into this job's before it starts (as SageMaker copies CheckpointConfig's S3 URI into the container), and
        the runtime resumes from the newest complete checkpoint there. The earlier job's files are not changed."""
        from dataclasses import replace

        from cloudtune.contracts.progress import STATUS_FILE

        source = str(earlier.extra.get("checkpoint_uri") or "")
        held = [p for p in Path(source).iterdir() if p.name != STATUS_FILE] if Path(source).is_dir() else []
        if not held:  # cleaned, or the job stopped before its first checkpoint: nothing to resume from
            raise InvalidInput(f"--resume {earlier.job_id}: that job has no checkpoint left in {source} (`cloudtune "
                               "clean` removes them; a job stopped before its first save has none), so this job would "
                               "start from step 0", fix="launch without --resume to train from the start")
        return replace(plan, request={**plan.request, "resume_from": source},
                       notes=(*plan.notes, f"resumes from {earlier.job_id}'s newest checkpoint (copied from {source})"))

    def resume_sweep(self, ref: JobRef) -> JobRef:
        """Run the rest of an ended local sweep (cloudtune.local.sweepplan.resume_sweep); InvalidInput while it runs."""
        if self.status(ref).state in ACTIVE:  # a driver that died is seen as failed here
            raise InvalidInput(f"--resume {ref.job_id}: the sweep is still running",
                               fix=f"follow it (`cloudtune logs -f {ref.job_id}`), or stop it first "
                                   f"(`cloudtune cancel {ref.job_id}`)")
        return resume_sweep(ref)

    def find(self, plan: Plan) -> JobRef | None:
        """The job `plan` made: its job directory has a state file once `submit` started it, and a supervisor runs or
        ran it, or the submit that wrote it still runs (cloudtune.local.starting); None otherwise."""
        return self._ref(plan) if starting.outcome(Path(plan.request["job_dir"])) == "started" else None

    def _with_free_port(self, plan: Plan) -> Plan:
        port = int(next(iter(plan.request["nodes"]))["env"].get("MASTER_PORT", "0") or 0)
        if not port:
            return plan
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return plan
            except OSError:
                pass
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            new = s.getsockname()[1]
        data = plan.to_dict()
        for node in data["request"]["nodes"]:
            node["env"]["MASTER_PORT"] = str(new)
        return Plan.from_dict(data)

    def _ref(self, plan: Plan) -> JobRef:
        if "sweep" in plan.request:
            return sweep_ref(plan.request, plan.job_name)
        return JobRef(provider="local", job_id=plan.job_name, native_id=plan.request["job_dir"],
                      console_url=None, model_uri=plan.model_uri,
                      extra={"job_dir": plan.request["job_dir"], "checkpoint_uri": plan.request.get("checkpoint_dir")})

    def status(self, ref: JobRef) -> JobStatus:
        job_dir = Path(ref.native_id)
        state = read_state(job_dir)
        if not state:
            return JobStatus(JobState.FAILED, "no state file", "the job directory is missing or was never started")
        name = state.get("state", JobState.PENDING)
        if starting.waiting_for_supervisor(state):
            if "launcher_pid" in state:  # whether it is starting is known (cloudtune.local.starting)
                if starting.outcome(job_dir) == "started":
                    return JobStatus(JobState.PENDING, "starting")
                return JobStatus(JobState.FAILED, "supervisor never started", starting.NEVER_STARTED)
            if time.time() - float(state.get("updated_at", 0)) < STARTUP_GRACE_S:
                return JobStatus(JobState.PENDING, "starting")
            return JobStatus(JobState.FAILED, "supervisor never started", f"see {job_dir / 'supervisor.log'}")
        if name in ACTIVE and not _alive(state.get("supervisor_pid")):
            time.sleep(0.2)  # the supervisor may be writing its final state right now
            state = read_state(job_dir)
            name = state.get("state", name)
            if name in ACTIVE:
                reason = _end_orphaned_job(job_dir)
                return JobStatus(JobState.FAILED, "supervisor exited", reason)
        detail = f"attempt {int(state.get('attempt', 0)) + 1}" if name == JobState.RUNNING else ""
        return JobStatus(name, detail, state.get("failure_reason"), state.get("exit_code"))

    def logs(self, ref: JobRef, follow: bool = False) -> Iterator[str]:
        path = Path(ref.native_id) / "job.log"
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as fh:
            while True:
                line = fh.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                if not follow or self.status(ref).state.terminal:
                    rest = fh.read()
                    for tail in rest.splitlines():
                        yield tail
                    return
                time.sleep(0.2)

    def download(self, ref: JobRef, dest: Path, *, checkpoints: bool = False) -> Path:
        """Copy the job's model dir (`ref.model_uri`, under its job directory) into `dest`; with `checkpoints`, its
        checkpoint dir into dest/checkpoints (see `Launcher.download`; sizes are checked, links refused)."""
        from cloudtune.kit.download import checkpoints_dir, copy_tree, note  # off the dry run's start-up path

        if not ref.model_uri:
            raise InvalidInput(f"job {ref.job_id} has no model dir recorded", fix=f"see `cloudtune status {ref.job_id}`")
        copy_tree(Path(ref.model_uri), dest, what=ref.model_uri)
        if checkpoints:
            source = ref.extra.get("checkpoint_uri") or _planned(Path(ref.native_id)).get("checkpoint_dir")
            if not source or not Path(source).is_dir() or not copy_tree(Path(source), checkpoints_dir(dest), what=source):
                note(f"no checkpoints in {source or ref.native_id}")
        return dest

    def cancel(self, ref: JobRef) -> None:
        deadline = time.monotonic() + STARTUP_GRACE_S
        job_dir = Path(ref.native_id)
        while ("supervisor_pid" not in (state := read_state(job_dir)) and starting.outcome(job_dir) == "started"
               and time.monotonic() < deadline):
            time.sleep(0.1)  # just submitted: wait for the supervisor to record itself
        pid = state.get("supervisor_pid")
        if state.get("state") in TERMINAL or not _alive(pid):
            return
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass


def _seed_checkpoints(request: dict[str, Any]) -> None:
    """Copy the checkpoints of the job this one resumes (`request["resume_from"]`, a directory) into its own
    checkpoint dir; nothing when the request resumes nothing or that directory has gone."""
    import shutil

    source = request.get("resume_from")
    if source and Path(source).is_dir():
        shutil.copytree(source, request["checkpoint_dir"], dirs_exist_ok=True, symlinks=True)


def _planned(job_dir: Path) -> dict[str, Any]:
    """The request of the plan a job directory was started from ({} when it cannot be read)."""
    import json

    try:
        return dict(json.loads((job_dir / "plan.json").read_text()).get("request") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def _end_orphaned_job(job_dir: Path) -> str:
    """A job whose supervisor died (killed, out of memory) ends here: its processes, which nothing else would
    stop, are killed, and the state file records the failure. Returns the failure reason."""
    reason = "the local supervisor died without recording an outcome"
    left = job_processes(job_dir)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if left:
        reason += f"; its {len(left)} remaining process(es) were killed"
    write_state(job_dir, state=JobState.FAILED.value, failure_reason=reason, exit_code=None, ended_at=time.time())
    return reason


def _alive(pid: Any) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
