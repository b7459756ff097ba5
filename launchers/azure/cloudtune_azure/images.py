"""Azure Machine Learning's curated PyTorch environment, which a stock-image job runs in.

Source: Azure ML's curated environment definitions (Azure/azureml-assets,
assets/training/general/environments/acpt-pytorch-2.8-cuda12.6: spec.yaml tags PyTorch 2.8, Python 3.10; its
Dockerfile builds FROM the ACPT stable-ubuntu2204-cu126-py310-torch280 image), published in the shared `azureml`
registry, and "Manage environments" (registry environments are referenced as
azureml://registries/<registry>/environments/<name>/...). The older acpt-pytorch-2.2-cuda12.1 (torch 2.2.2) cannot
run transformers 5.10 or later (its runtime torch floor): `cloudtune.kit.versions.check_lock` refuses such a pair.
"""

from __future__ import annotations

from cloudtune.kit.bootstrap import PROVIDER_TARGETS

ENVIRONMENT_NAME = "acpt-pytorch-2.8-cuda12.6"
FRAMEWORK_VERSION = "2.8"
CURATED_ENVIRONMENT = f"azureml://registries/azureml/environments/{ENVIRONMENT_NAME}/labels/latest"
# The wheel lock (cloudtune.kit.bootstrap) matching this environment's Python (py310) and torch.
LOCK_TARGET = PROVIDER_TARGETS["azure"]
