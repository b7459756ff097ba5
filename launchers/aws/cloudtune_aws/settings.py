"""`providers.aws` settings (spec, $CLOUDTUNE_HOME/config.yaml, CLOUDTUNE_AWS_<KEY>, AWS_REGION)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class AwsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env_aliases: ClassVar[dict[str, tuple[str, ...]]] = {"region": ("AWS_REGION", "AWS_DEFAULT_REGION")}

    region: str | None = Field(None, description="AWS region of the training job, e.g. us-east-1")
    role: str | None = Field(None, description="ARN of the SageMaker execution role the job runs as")
    bucket: str | None = Field(None, description="s3://bucket[/prefix] for uploads, checkpoints and the model")
    subnets: list[str] = Field(default_factory=list, description="VPC subnets (with security_groups)")
    security_groups: list[str] = Field(default_factory=list, description="VPC security groups (with subnets)")
    kms_key: str | None = Field(None, description="KMS key for the output and checkpoint objects")
    tags: dict[str, str] = Field(default_factory=dict)
    network_isolation: bool = False
    tensorboard: bool = False
    wheel_locks: str | None = Field(None, description="directory of stock-image wheel locks (<target>.json) to use "
                                    "instead of those shipped with cloudtune, e.g. with URLs of an internal mirror")
