"""The stock AWS PyTorch training image (Deep Learning Container) for a region, without importing any SDK.

The source of truth is the SageMaker Python SDK's own image-URI config (`image_uri_config/pytorch.json`
inside the installed `sagemaker` package; `sagemaker/core/...` in SDK v3, `sagemaker/...` in v2). The
file is located with `importlib.util.find_spec` on the top-level package (which imports nothing) and read
as JSON. When the SDK is absent, a checked-in copy for the pinned version (`pytorch_images.json`) is used
and the plan says so.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.bootstrap import PROVIDER_TARGETS

# The pinned framework version of the stock image. Bump together with pytorch_images.json.
FRAMEWORK_VERSION = "2.8.0"
# The wheel lock (cloudtune.kit.bootstrap) matching this image's Python (py312) and torch.
LOCK_TARGET = PROVIDER_TARGETS["aws"]
_FALLBACK = Path(__file__).with_name("pytorch_images.json")
_CANDIDATES = ("core/image_uri_config/pytorch.json", "image_uri_config/pytorch.json")


@dataclass(frozen=True)
class ImageTable:
    framework_version: str
    py_version: str
    repository: str
    processors: tuple[str, ...]
    registries: dict[str, str]
    source: str  # the file it came from
    from_sdk: bool


def sdk_config_path() -> Path | None:
    """The SDK's pytorch.json, or None when the sagemaker SDK is not installed (nothing is imported)."""
    try:
        spec = importlib.util.find_spec("sagemaker")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        for rel in _CANDIDATES:
            path = Path(root) / rel
            if path.is_file():
                return path
    return None


def _from_sdk(path: Path, version: str) -> ImageTable:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["training"]
    version = data.get("version_aliases", {}).get(version, version)
    entry = data["versions"][version]
    return ImageTable(
        framework_version=version,
        py_version=entry["py_versions"][0],
        repository=entry["repository"],
        processors=tuple(data.get("processors") or entry.get("processors") or ("cpu", "gpu")),
        registries=dict(entry["registries"]),
        source=str(path),
        from_sdk=True,
    )


def _from_fallback() -> ImageTable:
    data = json.loads(_FALLBACK.read_text(encoding="utf-8"))
    return ImageTable(
        framework_version=data["framework_version"],
        py_version=data["py_version"],
        repository=data["repository"],
        processors=tuple(data["processors"]),
        registries=dict(data["registries"]),
        source=str(_FALLBACK),
        from_sdk=False,
    )


@functools.lru_cache(maxsize=4)
def image_table(version: str = FRAMEWORK_VERSION, use_sdk: bool = True) -> ImageTable:
    path = sdk_config_path() if use_sdk else None
    if path is not None:
        try:
            return _from_sdk(path, version)
        except (KeyError, IndexError, ValueError, OSError):
            pass  # an SDK without this version: the checked-in table below still has it
    return _from_fallback()


def processor_for(instance_type: str, gpus: int) -> str:
    """cpu or gpu, the way the SDK decides it from the instance family (g*/p* are GPU families)."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    if family.startswith(("trn", "inf")):
        raise UnsupportedSpec(f"instance type {instance_type} needs the Neuron image, which cloudtune does not use",
                              fix="choose a GPU (ml.g*/ml.p*) or CPU instance type, or set `image:` to your own image")
    if family:
        return "gpu" if family[0] in ("g", "p") else "cpu"
    return "gpu" if gpus else "cpu"


def training_image_uri(region: str, processor: str, table: ImageTable | None = None) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com/pytorch-training:<version>-<processor>-<py>`."""
    table = table or image_table()
    if region not in table.registries:
        raise UnsupportedSpec(
            f"the stock PyTorch {table.framework_version} training image is not published in region {region!r}",
            fix="set providers.aws.region to one of: " + ", ".join(sorted(table.registries)) + ", or set `image:`",
        )
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = f"{table.framework_version}-{processor}-{table.py_version}"
    return f"{table.registries[region]}.dkr.ecr.{region}.{domain}/{table.repository}:{tag}"
