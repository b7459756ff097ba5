"""The planning template: the steps every launcher's `plan()` takes, in one order, written once.

A plan is made in these steps (`PlanningTemplate.compile`):

 1. the job model: a local `train.model` (or `job:<JOB>`) becomes an input (`cloudtune.jobinputs.with_model_input`);
 2. the cloud's refusals and settings checks (`check`), before anything is hashed;
 3. the object store the uploads go to (`store_base`) and the job's name by the cloud's naming rule (`job_name`);
 4. the machine: the catalog's choice and why (`machine`);
 5. the local inputs and the preflight of their content (`cloudtune.jobinputs.check_local_inputs`);
 6. the inputs: local ones uploaded content-addressed, remote ones checked against the cloud's store
    (`remote_input`) and named as the container sees them (`container_inputs`);
 7. the image, and for a stock image the wheelhouse of cloudtune's locked dependencies (`image`, `mount_wheels`);
 8. the code bundle with cloudtune's wheel (`bundle_texts`, `code_destination`);
 9. the native request (`request`, the cloud's own shape);
10. the cost estimate, the closing notes (`finish`) and the Plan.

Pure and offline: nothing is written and no SDK is imported; uploads are named by their content hash and staged
by `submit()` (`cloudtune.kit.staging`). The memory check of a train job and the notes on the code bundle and the
accelerator are added to every provider's plan by `cloudtune.api` (they need no launcher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts.deepspeed import STAGES as DEEPSPEED_STAGES
from cloudtune.contracts.jobfile import runtime_job
from cloudtune.errors import UnsupportedSpec
from cloudtune.jobinputs import check_local_inputs, with_model_input
from cloudtune.kit import cost, staging
from cloudtune.kit.bootstrap import TARGETS, Target, job_target
from cloudtune.kit.objectstore import local_input_upload
from cloudtune.kit.versions import versions_note
from cloudtune.plan import Plan, Upload
from cloudtune.spec import is_remote

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.catalog import Offer
    from cloudtune.spec import JobSpec

CUSTOM_IMAGE_PIP = "--no-deps --force-reinstall"  # the carried wheel over the image's own cloudtune, nothing else


@dataclass
class Draft:
    """A plan being made: what the steps so far decided. The cloud's steps read it and fill in their part."""

    spec: "JobSpec"  # with the model inputs (step 1)
    settings: Any  # the cloud's settings model (`providers.<name>`), as `check` left it
    suffix: str
    bundle: "Bundle | None"
    home: Path  # where staged files go ($CLOUDTUNE_HOME)
    lock_dir: Path | None  # the wheel locks (None: those shipped with cloudtune)
    notes: list[str] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    base: str = ""  # the object store URI uploads go under
    job_name: str = ""
    offer: "Offer | None" = None  # the catalog's machine (None: not in the catalog)
    instance_type: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)  # input name -> the cloud's reference (URI, entry)
    processes_per_node: int = 1
    image: Any = None  # the image URI (or the cloud's environment reference)
    wheels: Upload | None = None  # the stock image's wheelhouse (None: a custom image carries the dependencies)
    pip_flags: str = CUSTOM_IMAGE_PIP  # how the container installs the carried wheel
    extras: str = ""  # the wheel's extras: [train] on a stock image for a train job
    code: Upload | None = None  # the code bundle with cloudtune's wheel
    request: dict[str, Any] = field(default_factory=dict)  # the native request, once made (step 9)
    estimate: float | None = None
    cost_basis: str = cost.ON_DEMAND

    @property
    def gpus(self) -> int:
        """GPUs per node: the offer's, else the spec's accelerator count."""
        return self.offer.count if self.offer is not None else self.spec.resources.accel.count

    @property
    def train_extra(self) -> str:
        return " and its train extra" if self.spec.train else ""


class PlanningTemplate:
    """The planning steps; a cloud subclasses it and fills in what is its own. Subclasses set `provider` (the
    registry name), `store_kind` (its object store, for the input refusal), `installer` and `wheels_from` (who
    installs cloudtune from which place, for the wheelhouse note), and override the hooks below."""

    provider: str
    service: str = ""  # the cloud service's name, as errors and notes say it ("SageMaker")
    store_kind: str = ""  # e.g. "S3": "input 'x' (...) is not on S3"
    store_schemes: tuple[str, ...] = ()  # the URI schemes of remote inputs the container reads as they are
    installer: str = "the container"
    wheels_from: str = "the wheelhouse"
    code_first: bool = False  # uploads list the code bundle before the wheelhouse
    request_format: str = "json"

    # ------------------------------------------------------------------ the template
    def compile(self, spec: "JobSpec", settings: Any, *, suffix: str, bundle: "Bundle | None", home: Path,
                lock_dir: Path | None = None) -> Plan:
        """The Plan of `spec` on this cloud. Raises UnsupportedSpec (exit 2) for what it cannot run, with the fix."""
        d = Draft(with_model_input(spec, self.provider), settings, suffix, bundle, home, lock_dir)
        self.check(d)
        d.base = self.store_base(d)
        d.job_name = self.job_name(d)
        self.machine(d)
        d.notes += check_local_inputs(d.spec)  # what does not stop the job (warnings, trust_remote_code, push_to_hub)
        self.stage_inputs(d)
        d.processes_per_node = self.processes_per_node_of(d)
        self.stage_image(d)
        job = runtime_job(d.spec, self.container_inputs(d), d.processes_per_node)
        self.stage_code(d, job)
        d.request = self.request(d, job)
        d.estimate, d.cost_basis = cost.estimate(d.offer, d.spec.resources.spot, d.spec.resources.nodes)
        self.finish(d)
        return Plan(provider=self.provider, job_name=d.job_name, request=d.request, uploads=tuple(d.uploads),
                    instance_type=d.instance_type, instance_count=d.spec.resources.nodes,
                    estimated_usd_per_hour=d.estimate, cost_basis=d.cost_basis, model_uri=self.model_uri(d),
                    notes=tuple(d.notes), spec=self.plan_spec(d), request_format=self.request_format)

    # ------------------------------------------------------------------ steps with a default
    def machine(self, d: Draft) -> None:
        """The catalog's offer (`resources.instance_type.<provider>`, else the cheapest carrying the accelerator)
        and the note on why."""
        d.offer, why = cost.catalog_offer(d.spec, self.provider, "machine type")
        d.instance_type = d.offer.instance_type
        if why:
            d.notes.append(why)

    def stage_inputs(self, d: Draft) -> None:
        """Each input in name order: a remote URI as `remote_input` takes it, a local path uploaded under its
        content hash (`<base>/inputs/<sha256>/<name>`) and named by `local_input`."""
        for name, uri in sorted(d.spec.inputs.items()):
            if is_remote(uri):
                d.inputs[name] = self.remote_input(d, name, uri)
                continue
            up = local_input_upload(Path(uri), d.base)
            d.uploads.append(up)
            d.inputs[name] = self.local_input(d, name, up)

    def remote_input(self, d: Draft, name: str, uri: str) -> Any:
        """A remote input on the cloud's own store as it is; UnsupportedSpec for another store."""
        if not uri.startswith(tuple(f"{s}://" for s in self.store_schemes)):
            schemes = " or ".join(f"{s}://" for s in self.store_schemes)
            raise UnsupportedSpec(f"input {name!r} ({uri}) is not on {self.store_kind}; a {self.service} job reads "
                                  f"{schemes} inputs", fix=f"copy it to {self.store_kind} and give the {schemes} URI, "
                                  "or give a local path (uploaded at launch)")
        return uri

    def local_input(self, d: Draft, name: str, upload: Upload) -> Any:
        return upload.destination

    def processes_per_node_of(self, d: Draft) -> int:
        return d.spec.processes_per_node(d.gpus or None)

    def container_inputs(self, d: Draft) -> dict[str, str]:
        """Each input as the container sees it (the runtime job's `inputs`)."""
        return dict(d.inputs)

    def stage_image(self, d: Draft) -> None:
        """The image; on a stock image the wheelhouse of the image's lock target, installed with --no-index."""
        d.image, target = self.image(d)
        stock = None if d.spec.image else job_target(self.provider, d.spec.train is not None)
        if stock is not None:  # the image cloudtune picked (a stock one, or its own), whose contents it knows
            deepspeed_on_image(d.spec, TARGETS[stock], d.notes)
            flash_attn_on_image(d.spec, TARGETS[stock], d.notes)
        if target is None:
            return
        d.wheels = staging.wheelhouse(target, d.home, d.base, d.lock_dir)
        d.pip_flags = f"--no-index --find-links {self.mount_wheels(d)}"
        d.extras = "[train]" if d.spec.train is not None else ""
        d.notes.append(versions_note(target, d.lock_dir))
        d.notes.append(f"{self.installer} installs cloudtune{d.train_extra} from {self.wheels_from} ({target} lock, "
                       f"{d.wheels.bytes / 1e6:.0f} MB, uploaded once) with --no-index: no route to PyPI is needed")

    def stage_code(self, d: Draft, job: dict[str, Any]) -> None:
        """The code bundle: the user's code (a `command` job) plus cloudtune's wheel and the cloud's texts."""
        files = staging.cloudtune_files(True, self.bundle_texts(d, job))
        code = staging.compose(d.bundle, files)
        d.code = Upload(str(d.home / "bundles" / f"{code.sha256}.tar.gz"), self.code_destination(d, code.sha256),
                        code.size, code.sha256, staging.recipe(d.bundle, files))
        if d.wheels is not None and not self.code_first:
            d.uploads.append(d.wheels)
        d.uploads.append(d.code)
        if d.wheels is not None and self.code_first:
            d.uploads.append(d.wheels)

    def bundle_texts(self, d: Draft, job: dict[str, Any]) -> dict[str, str]:
        """cloudtune's files in the code bundle beyond its wheel (path -> text)."""
        return {}

    def code_destination(self, d: Draft, sha256: str) -> str:
        return f"{d.base}/bundles/{sha256}.tar.gz"

    def finish(self, d: Draft) -> None:
        """The closing notes, once the cost is known."""

    def plan_spec(self, d: Draft) -> dict[str, Any]:
        """The spec the plan records, with the settings it was planned with."""
        data = d.spec.model_dump(mode="json")
        data.setdefault("providers", {})[self.provider] = d.settings.model_dump(mode="json")
        return data

    # ------------------------------------------------------------------ the cloud's own
    def check(self, d: Draft) -> None:
        """What cannot run on this cloud, refused with its fix (UnsupportedSpec); may replace `d.settings`."""
        raise NotImplementedError

    def store_base(self, d: Draft) -> str:
        raise NotImplementedError

    def job_name(self, d: Draft) -> str:
        raise NotImplementedError

    def image(self, d: Draft) -> tuple[Any, str | None]:
        """(the image the job runs, the wheel-lock target of a stock image or None for one that carries cloudtune's
        dependencies)."""
        raise NotImplementedError

    def mount_wheels(self, d: Draft) -> str:
        """Make `d.wheels` reachable in the container; the directory pip finds the wheels in."""
        raise NotImplementedError

    def request(self, d: Draft, job: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def model_uri(self, d: Draft) -> str | None:
        raise NotImplementedError


def deepspeed_on_image(spec: Any, target: Target, notes: list[str]) -> None:
    """A `distributed: deepspeed-*` job needs deepspeed in its image (`package_on_image`; in the job:
    cloudtune.train.knobs.require_deepspeed)."""
    distributed = spec.train.distributed if spec.train is not None else None
    if distributed in DEEPSPEED_STAGES:
        package_on_image("deepspeed", target.deepspeed, target, notes, option=f"train.distributed {distributed}",
                         label=f"distributed {distributed}", why="PyPI has only its source distribution",
                         fix="name an image with deepspeed under `image:`, or use distributed: ddp or fsdp",
                         when="at start")


def flash_attn_on_image(spec: Any, target: Target, notes: list[str]) -> None:
    """`train.attn_implementation: flash_attention_2` needs flash-attn in its image (`package_on_image`; in the job:
    cloudtune.train.knobs.attention_kwargs)."""
    if spec.train is not None and spec.train.attn_implementation == "flash_attention_2":
        package_on_image("flash-attn", target.flash_attn, target, notes,
                         option="train.attn_implementation flash_attention_2",
                         label="attn_implementation flash_attention_2",
                         why="it builds against the image's CUDA toolkit",
                         fix="name an image with flash-attn under `image:`, or use attn_implementation: sdpa",
                         when="at load")


def package_on_image(package: str, carried: bool | None, target: Target, notes: list[str], *, option: str, label: str,
                     why: str, fix: str, when: str) -> None:
    """A job option that imports `package` from the image cloudtune picked, which no wheel lock can carry (`why`):
    UnsupportedSpec (before anything is uploaded) where the image is known to lack it (`carried` False), a plan note
    where its contents are not documented (None; the job then stops `when` with one line if it is missing)."""
    shown = target.image or target.name
    if carried is False:
        raise UnsupportedSpec(f"{option}: {shown} has no {package}, and cloudtune's wheel lock cannot add it ({why})",
                              fix=fix)
    if carried is None:
        notes.append(f"{label}: the job imports {package} from the image ({shown}); cloudtune's wheel lock does not "
                     f"carry it. If the image lacks it, the job stops {when} with one line: name an image with "
                     f"{package} under `image:` to be sure")

