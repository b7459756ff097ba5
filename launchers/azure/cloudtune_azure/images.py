"""Azure Machine Learning's curated PyTorch environment, which a stock-image job runs in.

Source: Azure ML docs, "Curated environments" (Azure Container for PyTorch, ACPT: the `acpt-pytorch-2.2-cuda12.1`
environment in the shared `azureml` registry, Ubuntu 20.04, Python 3.10, PyTorch 2.2.2, CUDA 12.1) and "Manage
environments" (registry environments are referenced as azureml://registries/<registry>/environments/<name>/...).
"""

from __future__ import annotations

from cloudtune.kit.bootstrap import PROVIDER_TARGETS

ENVIRONMENT_NAME = "acpt-pytorch-2.2-cuda12.1"
FRAMEWORK_VERSION = "2.2"
CURATED_ENVIRONMENT = f"azureml://registries/azureml/environments/{ENVIRONMENT_NAME}/labels/latest"
# The wheel lock (cloudtune.kit.bootstrap) matching this environment's Python (py310) and torch.
LOCK_TARGET = PROVIDER_TARGETS["azure"]
