"""Compile a job spec into a Vertex AI `CustomJob` Plan (the REST body of projects.locations.customJobs.create).

Pure and offline: no google-cloud import, nothing written (the code bundle with cloudtune's wheel is named by its
hash and staged by `submit()`). The request is `{"parent": ..., "customJob": {...}}`, the CreateCustomJobRequest.

The container contract is `cloudtune.contracts.vertex`: worker pool 0 is the chief (one replica), pool 1 the
other `nodes - 1`; `baseOutputDirectory` sets AIP_MODEL_DIR / AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR; gs://
inputs are read through the /gcs mount; the runtime job travels as `cloudtune-run --job-json`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts import vertex as vx
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.base import bucket_base
from cloudtune.kit.objectstore import local_input_upload
from cloudtune.kit import cost, staging
from cloudtune.kit.naming import GCP_LABEL_VALUE, VERTEX_DISPLAY
from cloudtune.kit.settings import require
from cloudtune.kit.versions import versions_note
from cloudtune.launcher import Capabilities, Capability
from cloudtune.plan import Plan, Upload
from cloudtune.spec import is_remote
from cloudtune_gcp.settings import GcpSettings

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
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

BOOTSTRAP = vx.BOOTSTRAP  # the container's command (cloudtune.contracts.vertex.bootstrap)
# The image lane (`providers.local.runtime: image`, docs/providers/local.md) runs the built-in recipes on the stock
# target's Python and torch: on torch 2.4 the libraries fail at import (transformers 5.10+ imports DTensor, 5.9
# torch.distributed.tensor.device_mesh), which no declared floor says and so no lock check can refuse.
STOCK_RECIPE_WARNING = ("warning: Vertex AI's prebuilt PyTorch container has torch 2.4, on which the recipe's libraries "
                        "fail at import (transformers needs torch.distributed.tensor, new in torch 2.5): this `train:` "
                        "job fails at start. To fix: build and push cloudtune's GPU image (containers/gpu; "
                        "docs/providers/gcp.md) and name it with `image:`")
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


def _machine(spec: "JobSpec", notes: list[str]) -> tuple["Offer | None", dict[str, Any]]:
    """The catalog offer and the MachineSpec. TPUs send their machine type and topology only: the API's
    AcceleratorType enum has no value for every TPU generation."""
    offer, why = cost.catalog_offer(spec, "gcp", "machine type")
    if why:
        notes.append(why)
    machine: dict[str, Any] = {"machineType": offer.instance_type}
    if offer.tpu_topology:
        machine["tpuTopology"] = offer.tpu_topology
        if spec.resources.nodes > 1:
            raise UnsupportedSpec(f"{spec.resources.nodes} nodes of {offer.accelerator}: multi-host TPU slices are not "
                                  "supported by cloudtune yet", fix="use nodes: 1 with a larger slice, e.g. TPU-v5e:8")
        notes.append(f"TPU {offer.accelerator} {offer.tpu_topology}: the job runs one process per host through "
                     "PyTorch/XLA")
    elif offer.count:
        machine["acceleratorType"] = offer.accelerator_type
        machine["acceleratorCount"] = offer.count
    return offer, machine


def _image(spec: "JobSpec", project: str, region: str, offer: "Offer", notes: list[str]) -> tuple[str, str, str, bool]:
    """(image URI, pip flags, wheel extras, whether it is a stock image that needs the wheelhouse)."""
    if spec.image:
        return spec.image, "--no-deps --force-reinstall", "", False
    from cloudtune_gcp.images import FRAMEWORK_VERSION, tpu_image_uri, training_image_uri

    if offer.tpu_topology:  # Vertex's prebuilt PyTorch/XLA lags the TPU generations and cloudtune's tested versions
        from cloudtune import __version__

        uri = tpu_image_uri(project, region, __version__)
        notes.append(f"image: cloudtune's TPU image {uri} (containers/tpu: torch and torch_xla 2.9.0, as the XLA "
                     "lane tests them); build and push it once before the first TPU job (docs/providers/gcp.md: Artifact Registry), "
                     "or set `image:` to another PyTorch/XLA image")
        return uri, "--no-deps --force-reinstall", "", False
    processor = "gpu" if offer.count else "cpu"
    notes.append(f"image: Vertex AI prebuilt PyTorch {FRAMEWORK_VERSION} training container ({processor})")
    return training_image_uri(region, processor), "", "[train]" if spec.train is not None else "", True


def _inputs(spec: "JobSpec", base: str) -> tuple[list[Upload], dict[str, str]]:
    """gs:// inputs as they are; local paths uploaded content-addressed (read through the /gcs mount)."""
    uploads: list[Upload] = []
    uris: dict[str, str] = {}
    for name, uri in sorted(spec.inputs.items()):
        if is_remote(uri):
            if not uri.startswith("gs://"):
                raise UnsupportedSpec(f"input {name!r} ({uri}) is not on Cloud Storage; a Vertex AI job reads gs:// inputs",
                                      fix="copy it to GCS and give the gs:// URI, or give a local path (uploaded at launch)")
            uris[name] = uri
            continue
        up = local_input_upload(Path(uri), base)
        uploads.append(up)
        uris[name] = up.destination.rstrip("/")
    return uploads, uris


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


def compile_plan(spec: "JobSpec", settings: GcpSettings, *, suffix: str, bundle: "Bundle | None", home: Path,
                 lock_dir: Path | None = None) -> Plan:
    """Compile a spec into a CustomJob Plan. Pure and offline (see the module docstring)."""
    from cloudtune.jobconfig import check_local_inputs, runtime_job, with_model_input

    spec = with_model_input(spec, "gcp")
    notes: list[str] = []
    _check_settings(spec, settings)
    project, region, base = str(settings.project), str(settings.region), bucket_base(str(settings.bucket), "gs", BUCKET_PATTERN.pattern, "gcp", "Cloud Storage")
    display = VERTEX_DISPLAY.check(spec.name, suffix)
    launch = GCP_LABEL_VALUE.check(spec.name, suffix)
    offer, machine = _machine(spec, notes)
    check_local_inputs(spec)
    uploads, uris = _inputs(spec, base)

    gpus = offer.count if offer is not None and not offer.tpu_topology else 0
    tpu_auto = offer is not None and bool(offer.tpu_topology) and spec.resources.processes_per_node == "auto"
    ppn = 1 if tpu_auto else spec.processes_per_node(gpus or None)  # PyTorch/XLA: one process per TPU host
    image, pip_flags, extras, stock = _image(spec, project, region, offer, notes)
    if stock:
        from cloudtune_gcp.images import LOCK_TARGET

        wheels = staging.wheelhouse(LOCK_TARGET, home, base, lock_dir)
        uploads.append(wheels)
        pip_flags = f"--no-index --find-links {vx.mount_path(wheels.destination.rstrip('/'))}"
        notes.append(versions_note(LOCK_TARGET, lock_dir))
        if spec.train is not None:
            notes.append(STOCK_RECIPE_WARNING)
        notes.append(f"the container installs cloudtune{' and its train extra' if spec.train else ''} from the "
                     f"wheelhouse ({LOCK_TARGET} lock, {wheels.bytes / 1e6:.0f} MB, uploaded once) with --no-index: "
                     "no route to PyPI is needed")
    files = staging.cloudtune_files(True, {})
    code = staging.compose(bundle, files)
    code_uri = f"{base}/bundles/{code.sha256}.tar.gz"
    uploads.append(Upload(str(home / "bundles" / f"{code.sha256}.tar.gz"), code_uri, code.size, code.sha256,
                          staging.recipe(bundle, files)))
    job = runtime_job(spec, uris, ppn, code_uri if spec.command is not None else None)
    extra_req = "google-cloud-secret-manager" if spec.secrets and stock else ""
    bootstrap_args = [vx.mount_path(code_uri), pip_flags, extras, extra_req]

    output = f"{(spec.outputs or f'{base}/output').rstrip('/')}/{display}"
    pool = {"machineSpec": machine, "replicaCount": "1",
            "diskSpec": {"bootDiskType": vx.boot_disk_type(machine["machineType"]),
                         "bootDiskSizeGb": spec.resources.disk_gb},
            "containerSpec": _container(spec, image, bootstrap_args, job)}
    pools = [pool] + ([{**pool, "replicaCount": str(spec.resources.nodes - 1)}] if spec.resources.nodes > 1 else [])
    job_spec: dict[str, Any] = {"workerPoolSpecs": pools, "scheduling": _scheduling(spec, notes),
                                "baseOutputDirectory": {"outputUriPrefix": output}}
    for key, value in (("serviceAccount", settings.service_account), ("network", settings.network),
                       ("tensorboard", settings.tensorboard)):
        if value:
            job_spec[key] = value
    labels = {**settings.labels, JOB_LABEL: spec.name, LAUNCH_LABEL: launch}
    custom_job: dict[str, Any] = {"displayName": display, "jobSpec": job_spec, "labels": dict(sorted(labels.items()))}
    if settings.kms_key:
        custom_job["encryptionSpec"] = {"kmsKeyName": settings.kms_key}
    if spec.secrets:
        notes.append("secrets travel as Secret Manager versions; the job's service account needs "
                     "roles/secretmanager.secretAccessor on: " + ", ".join(sorted(spec.secrets)))

    estimate, cost_basis = cost.estimate(offer, spec.resources.spot, spec.resources.nodes)
    plan_spec = spec.model_dump(mode="json")
    plan_spec.setdefault("providers", {})["gcp"] = settings.model_dump(mode="json")
    return Plan(
        provider="gcp", job_name=display,
        request={"parent": f"projects/{project}/locations/{region}", "customJob": custom_job},
        uploads=tuple(uploads), instance_type=offer.instance_type, instance_count=spec.resources.nodes,
        estimated_usd_per_hour=estimate, cost_basis=cost_basis,
        model_uri=vx.output_dirs(output)[vx.MODEL_DIR_VAR], notes=tuple(notes), spec=plan_spec,
    )

