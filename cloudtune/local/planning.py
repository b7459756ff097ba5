"""The local launcher's part of the planning template (`cloudtune.kit.planning`): the job runs on this machine, in a
faithful copy of one cloud's container contract (`cloudtune.local.layout`). There is no object store and no
machine choice: inputs and the code bundle are copied into the job directory at submit, and the request is the
layout of that directory and the nodes' environments."""

from __future__ import annotations

import importlib.util
import os
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.catalog import load_catalog
from cloudtune.errors import UnsupportedSpec
from cloudtune.hashing import digest
from cloudtune.kit.cost import catalog_offer
from cloudtune.kit.planning import Draft, PlanningTemplate
from cloudtune.kit.staging import recipe
from cloudtune.kit.versions import image_note, local_mismatches, target_software
from cloudtune.launcher import Capabilities, Capability
from cloudtune.local.layout import EMULATORS
from cloudtune.plan import Upload
from cloudtune.spec import is_remote

if TYPE_CHECKING:
    from cloudtune.local.imageenv import ImagePlan

CAPABILITIES = Capabilities(
    gpu=Capability(True, "uses this machine's GPUs when it has them; otherwise trains on CPU"),
    tpu=Capability(False, "TPUs exist only on Google Cloud"),
    multi_node=Capability(True, "nodes run as process groups on loopback, joined by torchrun"),
    spot=Capability(True, "spot is ignored locally; preemption is a SIGTERM you can send yourself"),
    log_streaming=Capability(True, "the job log is a local file"),
    remote_inputs=Capability(False, "the local launcher reads inputs from this machine's disk only"),
    secrets=Capability(True, "each secret is taken from the variable of the same name in your environment"),
)


def packages_of_options(spec: Any) -> list[tuple[str, str, str, str]]:
    """(module, pip package, the option that imports it, the option's fallback) for each package the job's options
    import that is not a dependency of cloudtune[train]: DeepSpeed (`train.distributed: deepspeed-*`), flash-attn
    (`train.attn_implementation: flash_attention_2`), bitsandbytes (`lora.quantize: 4bit`, the 8-bit and paged
    optimizers). Where the job runs on this machine's Python, a missing one is refused at plan time, not after the
    model and data have loaded."""
    from cloudtune.spec.preference import CUDA_ONLY_OPTIMIZERS

    train = spec.train
    if train is None:
        return []
    found: list[tuple[str, str, str, str]] = []
    if str(train.distributed or "").startswith("deepspeed"):
        found.append(("deepspeed", "deepspeed", f"train.distributed {train.distributed}", "use distributed: ddp or fsdp"))
    if train.attn_implementation == "flash_attention_2":
        found.append(("flash_attn", "flash-attn", "train.attn_implementation flash_attention_2",
                      "use attn_implementation: sdpa"))
    if train.lora is not None and train.lora.quantize == "4bit":
        found.append(("bitsandbytes", "bitsandbytes", "train.lora.quantize 4bit", "remove lora.quantize"))
    if train.hyperparameters.optimizer in CUDA_ONLY_OPTIMIZERS:
        found.append(("bitsandbytes", "bitsandbytes", f"train.hyperparameters.optimizer {train.hyperparameters.optimizer}",
                      "use optimizer: adamw"))
    return found


CUDA_PACKAGES = frozenset({"flash_attn", "bitsandbytes"})
"""Packages whose options need a CUDA GPU: without one the plan refuses the option itself, for that reason
(cloudtune.memory_check.check_quantize, cloudtune.preflight.knobs), which is the fix to give first."""


def host_has_packages(spec: Any) -> None:
    """UnsupportedSpec naming the option and the package when a job that runs on this machine's Python (no
    `image:`, `runtime: host`) needs a package this Python cannot import (`packages_of_options`); a CUDA-only
    package is asked for only where this machine has a CUDA GPU."""
    from cloudtune.memory_check import local_cuda

    for module, package, option, fallback in packages_of_options(spec):
        if module in CUDA_PACKAGES and not local_cuda():
            continue
        if importlib.util.find_spec(module) is None:
            raise UnsupportedSpec(f"{option}: the job runs on this machine's Python, which has no {package}",
                                  fix=f"pip install {package} (into {sys.executable}), or {fallback}")


def free_port(seed: str) -> int:
    """A port derived from the job name (plan stays a function of its inputs); checked free at submit.

    Kept under 32768 so that no outgoing connection (gloo, HTTP) can be holding it when torchrun binds it.
    """
    return 20000 + zlib.crc32(seed.encode()) % 12000  # below the kernel's ephemeral range (32768+)


class LocalPlanning(PlanningTemplate):
    """The local emulation's steps: refusals of what this machine cannot emulate, the image lane's environment, and
    the job directory's layout as the request."""

    provider = "local"
    service = "the local emulation"

    def check(self, d: Draft) -> None:
        spec = d.spec
        accel = spec.resources.accel
        if not accel.is_cpu:
            if load_catalog().normalize(accel.name).startswith("TPU"):
                CAPABILITIES.require("tpu", f"resources.accelerator {accel}",
                                     "run it with --provider gcp, or set resources.accelerator: cpu to debug locally")
            d.notes.append(f"accelerator {accel} is not emulated: the job uses this machine's devices")
        remote = sorted(name for name, uri in spec.inputs.items() if is_remote(uri))
        if remote:
            CAPABILITIES.require("remote_inputs", f"inputs {', '.join(remote)} are remote URIs",
                                 "download them and give local paths, or run on the cloud that hosts them")
        if spec.command is not None and d.bundle is None:
            raise UnsupportedSpec("a `command` job needs its code bundle",
                                  fix="build it with cloudtune.bundle.build_bundle(spec.code)")

    def store_base(self, d: Draft) -> str:
        return ""  # no object store: submit copies the files into the job directory

    def job_name(self, d: Draft) -> str:
        return f"{d.spec.name}-{d.suffix}"

    def machine(self, d: Draft) -> None:
        d.instance_type = f"local ({os.cpu_count()} CPUs)"
        if d.spec.resources.spot:
            d.notes.append("spot: ignored locally")

    def stage_inputs(self, d: Draft) -> None:
        """Inputs are copied by the layout (`request`), each at its emulated channel."""

    def container_inputs(self, d: Draft) -> dict[str, str]:
        return {name: name for name in d.spec.inputs}

    def processes_per_node_of(self, d: Draft) -> int:
        return d.spec.processes_per_node()

    def stage_image(self, d: Draft) -> None:
        """`runtime: image`: the planned image environment (`d.image`); else this machine, with a warning where it
        differs from the stock image."""
        spec, settings = d.spec, d.settings
        target = target_software(settings.emulate, train=spec.train is not None).target
        d.image = self._image_plan(d, target)
        if not spec.image and d.image is None:
            host_has_packages(spec)
            differ = local_mismatches(target)
            if differ:
                d.notes.append(f"warning: this machine differs from the {settings.emulate} stock image: "
                               f"{'; '.join(differ)}; a job that passes here may still fail there (test with "
                               "`image:` set to the image you run)")
        if spec.image:
            d.notes.append(image_note(spec.image))
        if spec.outputs:
            d.notes.append("outputs: not used locally; the model stays in the job directory (see model)")
        if spec.secrets:
            d.notes.append("secrets are read from your environment at submit: " + ", ".join(sorted(spec.secrets)))

    def stage_code(self, d: Draft, job: dict[str, Any]) -> None:
        """The user's bundle is copied as it is (`request`): no wheel of cloudtune is carried."""

    def request(self, d: Draft, job: dict[str, Any]) -> dict[str, Any]:
        """The job directory's layout under the emulated cloud's contract, the uploads being its copies."""
        from cloudtune.local.imageenv import apply_start_path  # runtime: image only

        spec, settings, bundle, image = d.spec, d.settings, d.bundle, d.image
        job_dir = (Path(settings.jobs_dir) if settings.jobs_dir else d.home / "jobs") / d.job_name
        # the code bundle is named here and written by submit() (a plan writes nothing)
        bundle_path = str(bundle.path or d.home / "bundles" / f"{bundle.sha256}.tar.gz") if bundle else None
        extra: dict[str, Any] = {}
        if settings.emulate == "aws":
            extra = {"instance_type": _sagemaker_instance_type(spec), "script_mode": not spec.image}
        if image is not None:
            bundle_path = image.code_path
        layout = EMULATORS[settings.emulate](job_dir, d.job_name, job, dict(spec.inputs), spec.resources.nodes,
                                             bundle_path, free_port(d.job_name), **extra)
        if settings.emulate == "azure" and spec.train is not None and importlib.util.find_spec("mlflow") is None:
            d.notes.append("MLflow: Azure ML sets MLFLOW_TRACKING_URI and the job logs metrics there; mlflow is not "
                           "installed here, so that path is not run locally (pip install mlflow to run it)")
        image_request = None
        if image is not None:
            image_request = apply_start_path(layout, settings.emulate, image, job_dir)
            d.uploads.append(image.wheelhouse)
        for copy in layout.copies:
            if image is not None and copy.source == bundle_path:
                d.uploads.append(Upload(copy.source, copy.destination, image.code.size, image.code.sha256,
                                        image.code_recipe))
            elif bundle and copy.source == bundle_path:
                build = recipe(bundle, {}) if bundle.path is None else None
                d.uploads.append(Upload(copy.source, copy.destination, bundle.size, bundle.sha256, build))
            else:
                d.uploads.append(Upload(copy.source, copy.destination, *digest(Path(copy.source))))
        request: dict[str, Any] = {
            "emulate": settings.emulate, "job_dir": str(job_dir), "retries": spec.retries,
            "max_runtime_seconds": spec.resources.max_runtime_seconds, "processes_per_node": d.processes_per_node,
            "secret_names": sorted(spec.secrets), **layout.to_dict(),
        }
        if image_request is not None:
            request["image"] = image_request
        return request

    def finish(self, d: Draft) -> None:
        d.estimate = 0.0  # this machine's time is not billed

    def model_uri(self, d: Draft) -> str:
        return str(d.request["model_dir"])

    def plan_spec(self, d: Draft) -> dict[str, Any]:
        return d.spec.model_dump(mode="json")

    def _image_plan(self, d: Draft, target: str | None) -> "ImagePlan | None":
        """runtime: image: the planned image env, wheelhouse and code bundle (cloudtune.local.imageenv); else None."""
        from cloudtune.local.imageenv import env_path, plan_image  # runtime: image only

        spec, settings = d.spec, d.settings
        if settings.runtime != "image":
            return None
        if spec.image or target is None:
            raise UnsupportedSpec(f"providers.local.runtime: image emulates a stock image, and this job sets image: "
                                  f"{spec.image}" if spec.image else "providers.local.runtime: image needs a stock target",
                                  fix="remove `image:` to test on the stock image, or set providers.local.runtime: host")
        lock_dir = Path(settings.wheel_locks).expanduser() if settings.wheel_locks else None
        image = plan_image(settings.emulate, target, bundle=d.bundle, home=d.home, lock_dir=lock_dir,
                           train=spec.train is not None, secrets=bool(spec.secrets))
        cached = (env_path(d.home, image.target) / "cloudtune-image-env.json").is_file()
        t = image.target
        d.notes.append(f"runtime image: Python {t.python}, torch {t.torch or '(none)'} and the wheel lock {t.name}, "
                       "in a virtual environment "
                       + ("(cached)" if cached else "built at the first start and cached (torch is a CUDA build of "
                          "several GB from PyPI; it runs on CPU)")
                       + f"; each node starts through the {settings.emulate} start path (cloudtune installed from "
                         "the wheelhouse with --no-index)")
        return image


def _sagemaker_instance_type(spec: Any) -> str:
    """The instance type an aws plan of `spec` requests (resourceconfig.json names it); the catalog's CPU type when
    SageMaker offers nothing for the accelerator (the aws plan refuses such a spec itself)."""
    try:
        return catalog_offer(spec, "aws", "instance type")[0].instance_type
    except UnsupportedSpec:
        return "ml.m5.xlarge"
