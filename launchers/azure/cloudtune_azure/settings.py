"""`providers.azure` settings (spec, $CLOUDTUNE_HOME/config.yaml, CLOUDTUNE_AZURE_<KEY>, AZURE_SUBSCRIPTION_ID)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class AzureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env_aliases: ClassVar[dict[str, tuple[str, ...]]] = {
        "subscription_id": ("AZURE_SUBSCRIPTION_ID",),
        "resource_group": ("AZURE_RESOURCE_GROUP", "AZUREML_RESOURCE_GROUP"),
        "workspace": ("AZUREML_WORKSPACE_NAME",),
    }

    subscription_id: str | None = Field(None, description="Azure subscription id of the workspace")
    resource_group: str | None = Field(None, description="resource group of the workspace")
    workspace: str | None = Field(None, description="Azure Machine Learning workspace name")
    compute: str | None = Field(None, description="a compute cluster of the workspace; unset = serverless compute "
                                "sized from resources (instance_type, instance_count)")
    compute_tier: Literal["dedicated", "low_priority"] = Field(
        "dedicated", description="the named cluster's VM tier (set when it was created; cloudtune cannot see it "
        "offline): low_priority lets `spot: true` run on it")
    datastore: str = Field("workspaceblobstore", description="Blob datastore for uploads, checkpoints and the model")
    prefix: str = Field("cloudtune", description="path prefix inside the datastore")
    identity: str | None = Field(None, description="identity the job runs as: user_identity, managed (the "
                                 "compute's managed identity) or the client id of a user-assigned managed identity; "
                                 "unset = user_identity when the job has secrets")
    experiment_name: str | None = Field(None, description="experiment the job is filed under (default: the job name)")
    environment: str | None = Field(None, description="an environment to run in instead of the curated PyTorch one, "
                                    "e.g. azureml:my-env:3 (the wheelhouse still brings cloudtune)")
    tags: dict[str, str] = Field(default_factory=dict, description="tags on the command job")
    wheel_locks: str | None = Field(None, description="directory of stock-image wheel locks (<target>.json) to use "
                                    "instead of those shipped with cloudtune, e.g. with URLs of an internal mirror")
