"""Vertex AI's prebuilt PyTorch training containers for a region.

Source: Vertex AI docs, "Prebuilt containers for custom training" (PyTorch: pytorch-gpu, pytorch-cpu and
pytorch-xla images in the us, europe and asia Artifact Registry multi-regions, Python 3.10). 2.4 is the newest
PyTorch these containers ship; its wheel lock keeps transformers below 5.15, whose runtime torch floor (2.5) the
image does not meet (`cloudtune.kit.bootstrap.TARGETS`, checked by `cloudtune.kit.versions.check_lock`).
"""

from __future__ import annotations

from cloudtune.kit.bootstrap import PROVIDER_TARGETS, RECIPE_TARGETS

FRAMEWORK_VERSION = "2.4"
# The wheel lock (cloudtune.kit.bootstrap) matching these images' Python (py310) and torch: `command:` jobs.
LOCK_TARGET = PROVIDER_TARGETS["gcp"]
# `train:` jobs run cloudtune's own GPU image (containers/gpu), built from this lock: the recipes' libraries do not
# run on torch 2.4 (cloudtune.kit.bootstrap.RECIPE_TARGETS).
RECIPE_TARGET = RECIPE_TARGETS["gcp"]
PY_VERSION = "py310"
_REPOSITORY = "docker.pkg.dev/vertex-ai/training"


def multi_region(region: str) -> str:
    """The Artifact Registry multi-region serving `region`: us, europe or asia."""
    if region.startswith("europe"):
        return "europe"
    if region.startswith(("asia", "australia", "me-")):
        return "asia"
    return "us"


def training_image_uri(region: str, processor: str) -> str:
    """`processor`: gpu, cpu or xla (TPU)."""
    version = FRAMEWORK_VERSION.replace(".", "-")
    return f"{multi_region(region)}-{_REPOSITORY}/pytorch-{processor}.{version}.{PY_VERSION}:latest"


def tpu_image_uri(project: str, region: str, version: str) -> str:
    """cloudtune's own TPU image (containers/tpu: torch + torch_xla 2.9.0, the versions the XLA lane tests) in the
    project's `cloudtune` Artifact Registry repository of the region, as docs/providers/gcp.md's build and push steps put it."""
    return f"{region}-docker.pkg.dev/{project}/cloudtune/cloudtune-tpu:{version}"


def gpu_image_uri(project: str, region: str, version: str) -> str:
    """cloudtune's own GPU image (containers/gpu: the RECIPE_TARGET lock on torch 2.9.1) in the project's `cloudtune`
    Artifact Registry repository of the region, as docs/providers/gcp.md's build and push steps put it."""
    return f"{region}-docker.pkg.dev/{project}/cloudtune/cloudtune-gpu:{version}"
