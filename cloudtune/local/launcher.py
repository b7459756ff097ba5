"""The local launcher: runs a job on this machine inside a faithful copy of one cloud's container contract."""

from __future__ import annotations

import importlib.util
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
from cloudtune.hashing import digest
from cloudtune.kit.staging import recipe, stage
from cloudtune.kit.states import TERMINAL_NAMES, is_terminal
from cloudtune.jobconfig import check_local_inputs, runtime_job, with_model_input
from cloudtune.launcher import Capabilities, Capability, JobRef, JobStatus
from cloudtune.local.layout import EMULATORS
from cloudtune.local.supervisor import read_state, write_state
from cloudtune.plan import Plan, Upload
from cloudtune.settings import cloudtune_home
from cloudtune.spec import LocalSettings, is_remote

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.local.imageenv import ImagePlan
    from cloudtune.spec import JobSpec

STARTUP_GRACE_S = 30.0

CAPABILITIES = Capabilities(
    gpu=Capability(True, "uses this machine's GPUs when it has them; otherwise trains on CPU"),
    tpu=Capability(False, "TPUs exist only on Google Cloud"),
    multi_node=Capability(True, "nodes run as process groups on loopback, joined by torchrun"),
    spot=Capability(True, "spot is ignored locally; preemption is a SIGTERM you can send yourself"),
    log_streaming=Capability(True, "the job log is a local file"),
    remote_inputs=Capability(False, "the local launcher reads inputs from this machine's disk only"),
    secrets=Capability(True, "each secret is taken from the variable of the same name in your environment"),
)


def _free_port(seed: str) -> int:
    """A port derived from the job name (plan stays a function of its inputs); checked free at submit.

    Kept under 32768 so that no outgoing connection (gloo, HTTP) can be holding it when torchrun binds it.
    """
    import zlib

    return 20000 + zlib.crc32(seed.encode()) % 12000  # below the kernel's ephemeral range (32768+)


class LocalLauncher:
    name = "local"
    capabilities = CAPABILITIES
    settings_model = LocalSettings

    def __init__(self, home: Path | None = None) -> None:
        self._home = home

    def home(self) -> Path:
        return self._home or cloudtune_home()

    # ---------------------------------------------------------------- plan (pure)
    def plan(self, spec: "JobSpec", settings: LocalSettings, *, suffix: str, bundle: "Bundle | None" = None) -> Plan:
        spec = with_model_input(spec, self.name)
        accel = spec.resources.accel
        notes: list[str] = []
        if not accel.is_cpu:
            from cloudtune.catalog import load_catalog

            if load_catalog().normalize(accel.name).startswith("TPU"):
                self.capabilities.require("tpu", f"resources.accelerator {accel}",
                                          "run it with --provider gcp, or set resources.accelerator: cpu to debug locally")
            notes.append(f"accelerator {accel} is not emulated: the job uses this machine's devices")
        remote = sorted(name for name, uri in spec.inputs.items() if is_remote(uri))
        if remote:
            self.capabilities.require(
                "remote_inputs", f"inputs {', '.join(remote)} are remote URIs",
                "download them and give local paths, or run on the cloud that hosts them",
            )
        if spec.command is not None and bundle is None:
            raise UnsupportedSpec("a `command` job needs its code bundle", fix="build it with cloudtune.bundle.build_bundle(spec.code)")
        check_local_inputs(spec)
        if spec.resources.spot:
            notes.append("spot: ignored locally")
        from cloudtune.kit.versions import local_mismatches, target_software

        target = target_software(settings.emulate).target
        image = self._image_plan(spec, settings, bundle, target, notes)
        if not spec.image and image is None:
            differ = local_mismatches(target)
            if differ:
                notes.append(f"warning: this machine differs from the {settings.emulate} stock image: {'; '.join(differ)}; "
                             "a job that passes here may still fail there (test with `image:` set to the image you run)")
        if spec.image:
            from cloudtune.kit.versions import image_note

            notes.append(image_note(spec.image))
        if spec.outputs:
            notes.append("outputs: not used locally; the model stays in the job directory (see model)")
        if spec.secrets:
            notes.append("secrets are read from your environment at submit: " + ", ".join(sorted(spec.secrets)))

        job_name = f"{spec.name}-{suffix}"
        jobs_dir = Path(settings.jobs_dir) if settings.jobs_dir else self.home() / "jobs"
        job_dir = jobs_dir / job_name
        ppn = spec.processes_per_node()
        job = runtime_job(spec, {name: name for name in spec.inputs}, ppn)
        # the code bundle is named here and written by submit() (a plan writes nothing)
        bundle_path = str(bundle.path or self.home() / "bundles" / f"{bundle.sha256}.tar.gz") if bundle else None
        extra: dict[str, Any] = {}
        if settings.emulate == "aws":
            extra = {"instance_type": _sagemaker_instance_type(spec), "script_mode": not spec.image}
        if image is not None:
            bundle_path = image.code_path
        layout = EMULATORS[settings.emulate](
            job_dir, job_name, job, dict(spec.inputs), spec.resources.nodes, bundle_path, _free_port(job_name), **extra,
        )
        if settings.emulate == "azure" and spec.train is not None and importlib.util.find_spec("mlflow") is None:
            notes.append("MLflow: Azure ML sets MLFLOW_TRACKING_URI and the job logs metrics there; mlflow is not "
                         "installed here, so that path is not run locally (pip install mlflow to run it)")
        uploads = []
        image_request = None
        if image is not None:
            from cloudtune.local.imageenv import apply_start_path

            image_request = apply_start_path(layout, settings.emulate, image, job_dir)
            uploads.append(image.wheelhouse)
        for copy in layout.copies:
            if image is not None and copy.source == bundle_path:
                uploads.append(Upload(copy.source, copy.destination, image.code.size, image.code.sha256, image.code_recipe))
            elif bundle and copy.source == bundle_path:
                build = recipe(bundle, {}) if bundle.path is None else None
                uploads.append(Upload(copy.source, copy.destination, bundle.size, bundle.sha256, build))
            else:
                uploads.append(Upload(copy.source, copy.destination, *digest(Path(copy.source))))
        request: dict[str, Any] = {
            "emulate": settings.emulate,
            "job_dir": str(job_dir),
            "retries": spec.retries,
            "max_runtime_seconds": spec.resources.max_runtime_seconds,
            "processes_per_node": ppn,
            "secret_names": sorted(spec.secrets),
            **layout.to_dict(),
        }
        if image_request is not None:
            request["image"] = image_request
        return Plan(
            provider="local",
            job_name=job_name,
            request=request,
            uploads=tuple(uploads),
            instance_type=f"local ({os.cpu_count()} CPUs)",
            instance_count=spec.resources.nodes,
            estimated_usd_per_hour=0.0,
            model_uri=layout.model_dir,
            notes=tuple(notes),
            spec=spec.model_dump(mode="json"),
        )

    def _image_plan(self, spec: "JobSpec", settings: LocalSettings, bundle: "Bundle | None", target: str | None,
                    notes: list[str]) -> "ImagePlan | None":
        """runtime: image: the planned image env, wheelhouse and code bundle (cloudtune.local.imageenv); else None."""
        if settings.runtime != "image":
            return None
        if spec.image or target is None:
            raise UnsupportedSpec(f"providers.local.runtime: image emulates a stock image, and this job sets image: "
                                  f"{spec.image}" if spec.image else "providers.local.runtime: image needs a stock target",
                                  fix="remove `image:` to test on the stock image, or set providers.local.runtime: host")
        from cloudtune.local.imageenv import env_path, plan_image

        lock_dir = Path(settings.wheel_locks).expanduser() if settings.wheel_locks else None
        image = plan_image(settings.emulate, target, bundle, self.home(), lock_dir, spec.train is not None,
                           bool(spec.secrets))
        cached = (env_path(self.home(), image.target) / "cloudtune-image-env.json").is_file()
        t = image.target
        notes.append(f"runtime image: Python {t.python}, torch {t.torch or '(none)'} and the wheel lock {t.name}, in a "
                     "virtual environment "
                     + ("(cached)" if cached else "built at the first start and cached (torch is a CUDA build of "
                        "several GB from PyPI; it runs on CPU)")
                     + f"; each node starts through the {settings.emulate} start path (cloudtune installed from the "
                       "wheelhouse with --no-index)")
        return image

    # ---------------------------------------------------------------- submit and after
    def submit(self, plan: Plan) -> JobRef:
        job_dir = Path(plan.request["job_dir"])
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the user's alone, as $CLOUDTUNE_HOME (store)
        if (job_dir / "state.json").exists():  # idempotent: this plan was already submitted
            return self._ref(plan)
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
        write_state(job_dir, state="pending")  # the supervisor adds its pid and moves on to running
        subprocess.Popen(
            [sys.executable, "-m", "cloudtune.local.supervisor", str(job_dir)],
            stdin=subprocess.DEVNULL, stdout=open(job_dir / "supervisor.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
        return self._ref(plan)

    def resume(self, plan: Plan, earlier: JobRef) -> Plan:
        """`plan` made to start from `earlier`'s newest checkpoint: submit copies the earlier job's checkpoint dir
        into this job's before it starts (as SageMaker copies CheckpointConfig's S3 URI into the container), and
        the runtime resumes from the newest complete checkpoint there. The earlier job's files are not changed."""
        from dataclasses import replace

        source = str(earlier.extra.get("checkpoint_uri") or "")
        return replace(plan, request={**plan.request, "resume_from": source},
                       notes=(*plan.notes, f"resumes from {earlier.job_id}'s newest checkpoint (copied from {source})"))

    def find(self, plan: Plan) -> JobRef | None:
        """The job `plan` made: its job directory has a state file once `submit` started it; None otherwise."""
        return self._ref(plan) if (Path(plan.request["job_dir"]) / "state.json").exists() else None

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
        return JobRef(provider="local", job_id=plan.job_name, native_id=plan.request["job_dir"],
                      console_url=None, model_uri=plan.model_uri,
                      extra={"job_dir": plan.request["job_dir"], "checkpoint_uri": plan.request.get("checkpoint_dir")})

    def status(self, ref: JobRef) -> JobStatus:
        job_dir = Path(ref.native_id)
        state = read_state(job_dir)
        if not state:
            return JobStatus("failed", "no state file", "the job directory is missing or was never started")
        name = state.get("state", "pending")
        if name == "pending" and "supervisor_pid" not in state:
            if time.time() - float(state.get("updated_at", 0)) < STARTUP_GRACE_S:
                return JobStatus("pending", "starting")
            return JobStatus("failed", "supervisor never started", f"see {job_dir / 'supervisor.log'}")
        if name in ("pending", "running") and not _alive(state.get("supervisor_pid")):
            time.sleep(0.2)  # the supervisor may be writing its final state right now
            state = read_state(job_dir)
            name = state.get("state", name)
            if name in ("pending", "running"):
                reason = _end_orphaned_job(job_dir)
                return JobStatus("failed", "supervisor exited", reason)
        detail = f"attempt {int(state.get('attempt', 0)) + 1}" if name == "running" else ""
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
                if not follow or is_terminal(self.status(ref).state):
                    rest = fh.read()
                    for tail in rest.splitlines():
                        yield tail
                    return
                time.sleep(0.2)

    def download(self, ref: JobRef, dest: Path, *, checkpoints: bool = False) -> Path:
        """Copy the job's model dir (`ref.model_uri`, under its job directory) into `dest`; with `checkpoints`, its
        checkpoint dir into dest/checkpoints (see `Launcher.download`; sizes are checked, links refused)."""
        from cloudtune.kit.download import checkpoints_dir, copy_tree, note

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
        while "supervisor_pid" not in (state := read_state(Path(ref.native_id))) and time.monotonic() < deadline:
            time.sleep(0.1)  # just submitted: wait for the supervisor to record itself
        pid = state.get("supervisor_pid")
        if state.get("state") in TERMINAL_NAMES or not _alive(pid):
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
    from cloudtune.local.proctree import job_processes

    reason = "the local supervisor died without recording an outcome"
    left = job_processes(job_dir)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if left:
        reason += f"; its {len(left)} remaining process(es) were killed"
    write_state(job_dir, state="failed", failure_reason=reason, exit_code=None, ended_at=time.time())
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


def _sagemaker_instance_type(spec: "JobSpec") -> str:
    """The instance type an aws plan of `spec` requests (resourceconfig.json names it); the catalog's CPU type when
    SageMaker offers nothing for the accelerator (the aws plan refuses such a spec itself)."""
    from cloudtune.kit.cost import catalog_offer

    try:
        return catalog_offer(spec, "aws", "instance type")[0].instance_type
    except UnsupportedSpec:
        return "ml.m5.xlarge"
