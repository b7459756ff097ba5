"""`providers.gcp` settings (spec, $CLOUDTUNE_HOME/config.yaml, CLOUDTUNE_GCP_<KEY>, GOOGLE_CLOUD_PROJECT)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class GcpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env_aliases: ClassVar[dict[str, tuple[str, ...]]] = {
        "project": ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"),
        "region": ("GOOGLE_CLOUD_REGION", "CLOUDSDK_COMPUTE_REGION"),
    }

    project: str | None = Field(None, description="Google Cloud project id")
    region: str | None = Field(None, description="Vertex AI region, e.g. us-central1")
    bucket: str | None = Field(None, description="gs://bucket[/prefix] for uploads, checkpoints and the model")
    service_account: str | None = Field(None, description="service account email the job runs as")
    network: str | None = Field(None, description="VPC peered network: projects/PROJECT_NUMBER/global/networks/NAME")
    kms_key: str | None = Field(None, description="Cloud KMS key (CMEK): projects/P/locations/L/keyRings/R/cryptoKeys/K")
    tensorboard: str | None = Field(None, description="Vertex TensorBoard: projects/P/locations/L/tensorboards/ID")
    labels: dict[str, str] = Field(default_factory=dict, description="labels on the CustomJob")
    wheel_locks: str | None = Field(None, description="directory of stock-image wheel locks (<target>.json) to use "
                                    "instead of those shipped with cloudtune, e.g. with URLs of an internal mirror")
