"""The stock-image bootstrap: what cloudtune-run needs beyond a cloud's stock PyTorch image travels with the job
as wheels, so a job starts without reaching PyPI (network-isolated jobs, private VPCs).

Each target (an image's Python and platform) has a hash-pinned lock in `locks/<target>.json`, written by
`python -m cloudtune.kit.lockgen`. A plan names the wheelhouse (a directory of the lock's wheels) by its
content hash, computed from the lock alone (no file, no network); `submit()` fetches each wheel once into a
cache, checks its sha256, assembles the wheelhouse and uploads it content-addressed (once per lock). The
container installs cloudtune's wheel with `pip install --no-index --find-links <wheelhouse>`.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudtune.errors import CloudtuneError, InvalidInput

LOCK_DIR = Path(__file__).with_name("locks")


@dataclass(frozen=True)
class Target:
    """A stock image's interpreter: Python version, ABI tag, platform tags pip may pick, and its torch.

    `image` names the image and `source` where its Python and torch versions are documented. `pins` are
    requirement specifiers the lock resolver must honour because a library's newer releases need more than the
    image has in ways pip cannot see (runtime floors: see `cloudtune.kit.versions.check_lock`).
    """

    name: str
    python: str
    abi: str
    platforms: tuple[str, ...]
    torch: str
    extra: tuple[str, ...] = ()  # requirements beyond cloudtune[train] that jobs on this image may need
    pins: tuple[str, ...] = ()
    image: str = ""
    source: str = ""
    own: bool = False  # cloudtune's own image: the lock is installed when the image is built, not by the job
    root_extras: tuple[str, ...] = ("train",)  # cloudtune's extras the lock carries; () for `command:` jobs only
    # whether the image itself carries DeepSpeed, which no lock can install (PyPI has only its source distribution,
    # built against the image's CUDA toolkit): False where the image's own files show it does not, None where unknown
    deepspeed: bool | None = None
    # the same for flash-attn (train.attn_implementation: flash_attention_2), which is built against the image's CUDA
    flash_attn: bool | None = None


_MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
# the own image's Ubuntu 22.04 (glibc 2.35) also takes manylinux_2_24 wheels (bitsandbytes ships only those)
_MANYLINUX_OWN = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                  "linux_x86_64")
TARGETS: dict[str, Target] = {
    "sagemaker-pytorch-py312": Target(
        "sagemaker-pytorch-py312", "3.12", "cp312", _MANYLINUX, "2.8.0",
        image="SageMaker PyTorch 2.8.0 training DLC (pytorch-training:2.8.0-gpu-py312)",
        source="sagemaker SDK image_uri_config/pytorch.json (training 2.8.0: py_versions py312); "
               "launchers/aws/cloudtune_aws/pytorch_images.json"),
    # Vertex AI's newest prebuilt PyTorch training containers are 2.4 (py310), on which the recipes' libraries fail
    # at import (RECIPE_TARGETS): this lock serves `command:` jobs, which install cloudtune without its train extra.
    "vertex-pytorch-py310": Target(
        "vertex-pytorch-py310", "3.10", "cp310", _MANYLINUX, "2.4.0", ("google-cloud-secret-manager",),
        root_extras=(),
        image="Vertex AI prebuilt PyTorch 2.4 training container (pytorch-gpu.2-4.py310 / pytorch-cpu.2-4.py310)",
        source="Vertex AI docs, Prebuilt containers for custom training (PyTorch 2.4, Python 3.10)"),
    # Azure ML's curated ACPT PyTorch 2.8 environment (Python 3.10 in its ptca conda env, torch 2.8.0 cu126 wheels);
    # Key Vault secrets and MLflow to Studio's metrics tab need the Azure packages listed.
    "azureml-acpt-py310": Target(
        "azureml-acpt-py310", "3.10", "cp310", _MANYLINUX, "2.8.0",
        ("azure-identity", "azure-keyvault-secrets", "azureml-mlflow"),
        image="Azure ML curated environment acpt-pytorch-2.8-cuda12.6",
        source="Azure/azureml-assets assets/training/general/environments/acpt-pytorch-2.8-cuda12.6 (spec.yaml tags "
               "PyTorch 2.8, Python 3.10; Dockerfile FROM acpt stable-ubuntu2204-cu126-py310-torch280)"),
    # cloudtune's own GPU image (containers/gpu), built from this lock and pushed once to the user's registry: the
    # image a cloud runs `train:` jobs on when its stock image cannot run the recipes (RECIPE_TARGETS). Its base
    # image pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime has Python 3.11 (the PYTHON_VERSION of pytorch's
    # Dockerfile) and torch 2.9.1; bitsandbytes makes QLoRA (lora.quantize) work there, Secret Manager its secrets.
    "cloudtune-gpu-py311": Target(
        "cloudtune-gpu-py311", "3.11", "cp311", _MANYLINUX_OWN, "2.9.1",
        ("bitsandbytes>=0.45", "google-cloud-secret-manager"), own=True, deepspeed=False, flash_attn=False,
        image="cloudtune's GPU image (containers/gpu: FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime)",
        source="pytorch/pytorch 2.9.1 image tag (torch 2.9.1, CUDA 12.8); pytorch's Dockerfile ARG PYTHON_VERSION=3.11"),
}
# the stock target each cloud's launcher runs a job on when the spec names no `image:` (read by the launchers'
# images.py, the local emulation's version check and its image runtime)
PROVIDER_TARGETS: dict[str, str] = {
    "aws": "sagemaker-pytorch-py312",
    "gcp": "vertex-pytorch-py310",
    "azure": "azureml-acpt-py310",
}
# where a cloud's stock image cannot run the built-in recipes, the target its `train:` jobs run instead: Vertex AI's
# newest prebuilt PyTorch container has torch 2.4, and transformers 5.10+ fails at import there (module-level
# DTensor use; 5.9 needs torch.distributed.tensor.device_mesh) - measured by benchmarks/image_lanes.py
RECIPE_TARGETS: dict[str, str] = {
    "gcp": "cloudtune-gpu-py311",
}


def job_target(provider: str, train: bool) -> str | None:
    """The target a `provider` job with no `image:` runs on: RECIPE_TARGETS for a `train:` job where the cloud
    has one, else the stock PROVIDER_TARGETS entry; None for a provider with neither (local)."""
    return (RECIPE_TARGETS.get(provider) if train else None) or PROVIDER_TARGETS.get(provider)


@dataclass(frozen=True)
class Floor:
    """A version a wheel needs of something the image provides: `on` is "python" or "torch", `spec` a PEP 440
    specifier (">=2.6.0"), `source` where it was read (METADATA Requires-Python / Requires-Dist, or the module and
    function that enforces it at run time, for floors pip cannot see)."""

    on: str
    spec: str
    source: str


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int
    floors: tuple[Floor, ...] = ()  # recorded by lockgen
    requires: tuple[str, ...] = ()  # the wheel's METADATA Requires-Dist lines, markers and extras as written

    @classmethod
    def from_json(cls, data: dict) -> "Wheel":
        floors = tuple(Floor(**f) for f in data.get("floors", ()))
        return cls(data["name"], data["version"], data["filename"], data["url"], data["sha256"], int(data["size"]),
                   floors, tuple(data.get("requires", ())))


@dataclass(frozen=True)
class Lock:
    target: str
    wheels: tuple[Wheel, ...]
    floors_recorded: bool = False  # lockgen read every wheel's floors (an empty `floors` then means "none")
    # What the job installs from the lock, as lockgen resolved it: cloudtune's Requires-Dist lines and the target's
    # extra requirements and pins (`roots`), installed with the extras `root_extras` of cloudtune ("train"), and the
    # PEP 508 marker environment pip resolved the lock with, as (key, value) pairs. None: not recorded (an older lock).
    roots: tuple[str, ...] | None = None
    root_extras: tuple[str, ...] = ()
    resolved_with: tuple[tuple[str, str], ...] = ()

    def digest(self) -> tuple[int, str]:
        """(bytes, sha256) of the assembled wheelhouse, exactly as `cloudtune.hashing.digest` computes it for the
        directory: from the lock alone."""
        h = hashlib.sha256()
        for w in sorted(self.wheels, key=lambda w: w.filename):
            h.update(w.filename.encode() + b"\0" + w.sha256.encode() + b"\n")
        return sum(w.size for w in self.wheels), h.hexdigest()


def load_lock(target: str, lock_dir: Path | None = None) -> Lock:
    """The lock of `target` from `lock_dir` (default: the locks shipped with cloudtune)."""
    path = (lock_dir or LOCK_DIR) / f"{target}.json"
    if not path.is_file():
        raise InvalidInput(f"no wheel lock for image target {target!r}",
                           fix=f"write it with `python -m cloudtune.kit.lockgen {target}`")
    return lock_from_json(json.loads(path.read_text()))


def lock_from_json(data: dict) -> Lock:
    """A Lock from a lock file's JSON (see `cloudtune.kit.versions.TargetSoftware` for its shape)."""
    roots = data.get("roots")
    return Lock(data["target"], tuple(Wheel.from_json(w) for w in data["wheels"]), bool(data.get("floors_recorded")),
                None if roots is None else tuple(roots), tuple(data.get("root_extras", ())),
                tuple(sorted(data.get("resolved_with", {}).items())))


Fetch = Callable[[str, Path], None]


def _download(url: str, dest: Path) -> None:
    import urllib.request  # http and ssl: only when a wheel is fetched, never on the plan path

    with urllib.request.urlopen(url, timeout=120) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_wheel(wheel: Wheel, cache: Path, fetch: Fetch = _download) -> Path:
    """The wheel's file in `cache` (`<sha256>/<filename>`), fetched once and checked against the lock's sha256."""
    path = cache / wheel.sha256 / wheel.filename
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".fetch-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        print(f"[cloudtune] fetching {wheel.filename} ({wheel.size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
        try:
            fetch(wheel.url, tmp)
        except OSError as exc:
            raise CloudtuneError(f"cannot fetch {wheel.url}: {exc}",
                                 fix="check the network to PyPI (files.pythonhosted.org), or set `image:` to an "
                                     "image with cloudtune installed (containers/)") from None
        got = _sha256(tmp)
        if got != wheel.sha256:
            raise CloudtuneError(f"{wheel.filename} from {wheel.url} has sha256 {got[:12]}, the lock says "
                                 f"{wheel.sha256[:12]}: refused", fix="check what serves that URL; regenerate the "
                                 "lock only if the index legitimately changed")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def stage_wheelhouse(lock: Lock, out_dir: Path, cache: Path, fetch: Fetch = _download) -> Path:
    """Assemble the lock's wheels in `out_dir` (hard links into the cache where possible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for wheel in lock.wheels:
        src = cached_wheel(wheel, cache, fetch)
        dest = out_dir / wheel.filename
        if not dest.is_file():
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
    return out_dir
