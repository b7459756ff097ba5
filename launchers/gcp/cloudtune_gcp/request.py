"""Compile a job spec into a Vertex AI `CustomJob` Plan (the REST body of projects.locations.customJobs.create).

Pure and offline: no google-cloud import, nothing written (the code bundle with cloudtune's wheel is named by its
hash and staged by `submit()`). The request is `{"parent": ..., "customJob": {...}}`, the CreateCustomJobRequest.

The container contract is `cloudtune.contracts.vertex`: worker pool 0 is the chief (one replica), pool 1 the
other `nodes - 1`; `baseOutputDirectory` sets AIP_MODEL_DIR / AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR; gs://
inputs are read through the /gcs mount; the runtime job travels as `cloudtune-run --job-json`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cloudtune.contracts import vertex as vx
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.base import bucket_base
from cloudtune.kit.naming import NameRule
from cloudtune.kit.planning import Draft, PlanningTemplate
from cloudtune.kit.settings import require
from cloudtune.kit.versions import versions_note
from cloudtune.launcher import Capabilities, Capability
from cloudtune.plan import Upload
from cloudtune.version import __version__
from cloudtune_gcp.images import (FRAMEWORK_VERSION, LOCK_TARGET, RECIPE_TARGET, gpu_image_uri, tpu_image_uri,
                                  training_image_uri)
from cloudtune_gcp.settings import GcpSettings

if TYPE_CHECKING:
    from cloudtune.catalog import Offer
    from cloudtune.spec import JobSpec

LAUNCH_LABEL = "cloudtune-launch"  # finds the job a lost create made (Vertex assigns job ids itself)
JOB_LABEL = "cloudtune-job"
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
NETWORK = re.compile(r"projects/[^/]+/global/networks/[^/]+")
KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
TENSORBOARD = re.compile(r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+")
SECRET_VERSION = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")
# Vertex CustomJob.displayName: up to 128 UTF-8 characters. Vertex assigns the job id itself.
VERTEX_DISPLAY = NameRule("Vertex AI", "display names", 128, r".{1,128}", "at most 128 characters")
# Vertex/GCP labels: keys and values up to 63 characters of lowercase letters, digits, '_' and '-'.
GCP_LABEL_VALUE = NameRule("Google Cloud", "label values", 63, r"[a-z0-9_-]{0,63}",
                           "at most 63 lowercase letters, digits, '_' and '-'")

BOOTSTRAP = vx.BOOTSTRAP  # the container's command (cloudtune.contracts.vertex.bootstrap)
FINAL_EXIT_MARKER = vx.FINAL_EXIT_MARKER

CAPABILITIES = Capabilities(
    gpu=Capability(True, "Vertex AI machine types with attached NVIDIA GPUs (T4, L4, A100, H100, H200) from the catalog"),
    tpu=Capability(True, "Cloud TPU v5e, v5p and v6e machine types with their slice topology (single host)"),
    multi_node=Capability(True, "worker pool 0 (the chief) plus nodes - 1 replicas in pool 1, joined by torchrun"),
    spot=Capability(True, "Scheduling strategy SPOT (Spot VMs); checkpoints in AIP_CHECKPOINT_DIR survive a preemption"),
    log_streaming=Capability(True, "Cloud Logging entries of the job (resource type ml_job), all replicas"),
    remote_inputs=Capability(True, "gs:// inputs are read through the /gcs mount; local paths are uploaded to GCS"),
    secrets=Capability(True, "Secret Manager versions, resolved in the container with the job's service account"),
)


def _check_settings(spec: "JobSpec", settings: GcpSettings) -> None:
    require(settings, "gcp", ("project", "region", "bucket"))
    checks = [(settings.network, NETWORK, "network", "projects/PROJECT_NUMBER/global/networks/NAME"),
              (settings.kms_key, KMS_KEY, "kms_key", "projects/P/locations/L/keyRings/R/cryptoKeys/K"),
              (settings.tensorboard, TENSORBOARD, "tensorboard", "projects/P/locations/L/tensorboards/ID")]
    for value, pattern, key, form in checks:
        if value and not pattern.fullmatch(value):
            raise UnsupportedSpec(f"providers.gcp.{key} {value!r} is not a resource name", fix=f"give it as {form}")
    if settings.tensorboard and not settings.service_account:
        raise UnsupportedSpec("providers.gcp.tensorboard is set without providers.gcp.service_account: Vertex AI "
                              "writes to a TensorBoard only from a job that runs as a service account",
                              fix="set providers.gcp.service_account (with roles/aiplatform.user and storage access)")
    for key, value in settings.labels.items():
        if not LABEL_KEY.fullmatch(key) or not re.fullmatch(GCP_LABEL_VALUE.pattern, value):
            raise UnsupportedSpec(f"label {key}={value!r} is not a valid Google Cloud label",
                                  fix="keys and values: up to 63 lowercase letters, digits, '_' and '-' (keys start with a letter)")
    for key, ref in sorted(spec.secrets.items()):
        if not SECRET_VERSION.fullmatch(ref):
            raise UnsupportedSpec(f"secret {key!r} is not a Secret Manager version; a Vertex AI job cannot read it",
                                  fix="store it in Secret Manager and give projects/P/secrets/NAME/versions/N")
    if spec.outputs is not None and not spec.outputs.startswith("gs://"):
        raise UnsupportedSpec(f"outputs {spec.outputs!r} is not a gs:// URI", fix="set outputs: gs://BUCKET/PREFIX, or leave it unset")


def _machine_spec(offer: "Offer") -> dict[str, Any]:
    """The MachineSpec. TPUs send their machine type and topology only: the API's AcceleratorType enum has no value
    for every TPU generation."""
    machine: dict[str, Any] = {"machineType": offer.instance_type}
    if offer.tpu_topology:
        machine["tpuTopology"] = offer.tpu_topology
    elif offer.count:
        machine["acceleratorType"] = offer.accelerator_type
        machine["acceleratorCount"] = offer.count
    return machine


def _scheduling(spec: "JobSpec", notes: list[str]) -> dict[str, Any]:
    """The CustomJob's scheduling: its timeout, SPOT for spot, and Vertex AI's own restarts: off for `retries: 0`
    (disableRetries), else on; a restarted worker runs again only after a retried exit class (RUN_ONCE)."""
    scheduling: dict[str, Any] = {"timeout": f"{spec.resources.max_runtime_seconds}s"}
    if spec.resources.spot:
        scheduling["strategy"] = "SPOT"
    if spec.retries == 0:
        scheduling["disableRetries"] = True
        return scheduling
    if spec.resources.nodes > 1:
        scheduling["restartJobOnWorkerRestart"] = True
    notes.append(f"retries {spec.retries}: Vertex AI takes no retry count; it restarts a worker that exits non-zero "
                 "(up to 5 times, then the job up to 3 times) and a Spot-preempted job on its own"
                 + (" (every worker restarts together, so torchrun re-forms)" if spec.resources.nodes > 1 else "")
                 + "; a restart after a preemption (143) or an infrastructure failure (75) resumes from the newest "
                 "checkpoint, and one after bad input (65), divergence (66) or the job's own error exits at once with "
                 f"the same code (the first such exit is kept in {FINAL_EXIT_MARKER} in the checkpoint dir), as "
                 "`--provider local` never retries those")
    return scheduling


def _container(spec: "JobSpec", image: str, bootstrap_args: list[str], job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "imageUri": image,
        "command": ["/bin/sh", "-c", BOOTSTRAP, "cloudtune-bootstrap"],
        "args": [*bootstrap_args, *vx.run_args(job)],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    return container


class VertexPlanning(PlanningTemplate):
    """Vertex AI's part of the planning template (`cloudtune.kit.planning`)."""

    provider = "gcp"
    service = "Vertex AI"
    store_kind = "Cloud Storage"
    store_schemes = ("gs",)

    def check(self, d: Draft) -> None:
        _check_settings(d.spec, d.settings)

    def store_base(self, d: Draft) -> str:
        return bucket_base(str(d.settings.bucket), "gs", BUCKET_PATTERN.pattern, "gcp", "Cloud Storage")

    def job_name(self, d: Draft) -> str:
        display = VERTEX_DISPLAY.check(d.spec.name, d.suffix)
        GCP_LABEL_VALUE.check(d.spec.name, d.suffix)  # the launch label (see `request`)
        return display

    def machine(self, d: Draft) -> None:
        super().machine(d)
        offer = d.offer
        if offer is not None and offer.tpu_topology:
            if d.spec.resources.nodes > 1:
                raise UnsupportedSpec(f"{d.spec.resources.nodes} nodes of {offer.accelerator}: multi-host TPU slices "
                                      "are not supported by cloudtune yet", fix="use nodes: 1 with a larger slice, "
                                      "e.g. TPU-v5e:8")
            d.notes.append(f"TPU {offer.accelerator} {offer.tpu_topology}: the job runs one process per host through "
                           "PyTorch/XLA")

    def local_input(self, d: Draft, name: str, upload: Upload) -> str:
        return upload.destination.rstrip("/")  # read through the /gcs mount

    def processes_per_node_of(self, d: Draft) -> int:
        tpu = d.offer is not None and bool(d.offer.tpu_topology)
        if tpu and d.spec.resources.processes_per_node == "auto":
            return 1  # PyTorch/XLA: one process per TPU host
        return d.spec.processes_per_node((0 if tpu else d.gpus) or None)

    def image(self, d: Draft) -> tuple[str, str | None]:
        """A custom image; on a TPU cloudtune's TPU image (Vertex's prebuilt PyTorch/XLA lags the TPU generations
        and cloudtune's tested versions); a `train:` job cloudtune's GPU image (the prebuilt containers' torch 2.4
        cannot run the recipes); else (a `command:` job) Vertex AI's prebuilt PyTorch container."""
        if d.spec.image:
            return d.spec.image, None
        assert d.offer is not None
        project, region = str(d.settings.project), str(d.settings.region)
        if d.offer.tpu_topology:
            uri = tpu_image_uri(project, region, __version__)
            d.notes.append(f"image: cloudtune's TPU image {uri} (containers/tpu: torch and torch_xla 2.9.0, as the XLA "
                           "lane tests them); build and push it once before the first TPU job (docs/providers/gcp.md: "
                           "Artifact Registry), or set `image:` to another PyTorch/XLA image")
            return uri, None
        if d.spec.train is not None:
            uri = gpu_image_uri(project, region, __version__)
            d.notes.append(f"image: cloudtune's GPU image {uri} (containers/gpu, the {RECIPE_TARGET} lock): Vertex AI's "
                           f"prebuilt PyTorch containers stop at torch {FRAMEWORK_VERSION}, on which the recipe's "
                           "libraries fail at import; build and push it once before the first `train:` job "
                           "(docs/providers/gcp.md: Artifact Registry), or set `image:`")
            d.notes.append(versions_note(RECIPE_TARGET))
            return uri, None
        processor = "gpu" if d.offer.count else "cpu"
        d.notes.append(f"image: Vertex AI prebuilt PyTorch {FRAMEWORK_VERSION} training container ({processor})")
        return training_image_uri(str(d.settings.region), processor), LOCK_TARGET

    def mount_wheels(self, d: Draft) -> str:
        assert d.wheels is not None
        return vx.mount_path(d.wheels.destination.rstrip("/"))

    def request(self, d: Draft, job: dict[str, Any]) -> dict[str, Any]:
        """The CreateCustomJobRequest: pool 0 the chief, pool 1 the other nodes."""
        assert d.code is not None and d.offer is not None
        spec, settings = d.spec, d.settings
        if spec.command is not None:
            job = {**job, "code_uri": d.code.destination}
        extra_req = "google-cloud-secret-manager" if spec.secrets and d.wheels is not None else ""
        bootstrap_args = [vx.mount_path(d.code.destination), d.pip_flags, d.extras, extra_req]
        machine = _machine_spec(d.offer)
        pool = {"machineSpec": machine, "replicaCount": "1",
                "diskSpec": {"bootDiskType": vx.boot_disk_type(machine["machineType"]),
                             "bootDiskSizeGb": spec.resources.disk_gb},
                "containerSpec": _container(spec, d.image, bootstrap_args, job)}
        pools = [pool] + ([{**pool, "replicaCount": str(spec.resources.nodes - 1)}] if spec.resources.nodes > 1 else [])
        job_spec: dict[str, Any] = {"workerPoolSpecs": pools, "scheduling": _scheduling(spec, d.notes),
                                    "baseOutputDirectory": {"outputUriPrefix": self.output(d)}}
        for key, value in (("serviceAccount", settings.service_account), ("network", settings.network),
                           ("tensorboard", settings.tensorboard)):
            if value:
                job_spec[key] = value
        labels = {**settings.labels, JOB_LABEL: spec.name, LAUNCH_LABEL: GCP_LABEL_VALUE.check(spec.name, d.suffix)}
        custom_job: dict[str, Any] = {"displayName": d.job_name, "jobSpec": job_spec,
                                      "labels": dict(sorted(labels.items()))}
        if settings.kms_key:
            custom_job["encryptionSpec"] = {"kmsKeyName": settings.kms_key}
        if spec.secrets:
            d.notes.append("secrets travel as Secret Manager versions; the job's service account needs "
                           "roles/secretmanager.secretAccessor on: " + ", ".join(sorted(spec.secrets)))
        return {"parent": f"projects/{settings.project}/locations/{settings.region}", "customJob": custom_job}

    def output(self, d: Draft) -> str:
        return f"{(d.spec.outputs or f'{d.base}/output').rstrip('/')}/{d.job_name}"

    def model_uri(self, d: Draft) -> str:
        return vx.output_dirs(self.output(d))[vx.MODEL_DIR_VAR]


compile_plan = VertexPlanning().compile
