"""Where a job runs: the accelerator (`NAME[:COUNT]`), machines, limits, and the per-provider settings."""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtune.spec.base import Strict, shown
from cloudtune.units import parse_duration

MAX_ACCELERATORS_PER_NODE = 1024


class Accelerator(BaseModel):
    """A parsed `NAME[:COUNT]`; name "cpu" means no accelerator."""

    model_config = ConfigDict(frozen=True)
    name: str
    count: int

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"

    def __str__(self) -> str:
        return "cpu" if self.is_cpu else f"{self.name}:{self.count}"


def parse_accelerator(text: str) -> Accelerator:
    """Parse `NAME[:COUNT]` (e.g. `L4:1`, `H100:8`, `cpu`); the name is checked against the catalog later."""
    raw = str(text).strip()
    if raw.lower() == "cpu":
        return Accelerator(name="cpu", count=0)
    name, _, count = raw.partition(":")
    if not name:
        raise ValueError(f"accelerator {shown(text)} is empty; write NAME[:COUNT], e.g. L4:1, or cpu")
    if count == "":
        n = 1
    elif re.fullmatch(r"[0-9]{1,6}", count) and 0 < int(count) <= MAX_ACCELERATORS_PER_NODE:
        n = int(count)
    else:
        raise ValueError(f"accelerator count {shown(count)} must be a positive integer up to {MAX_ACCELERATORS_PER_NODE}, "
                         f"e.g. {shown(name)[1:-1]}:1")
    return Accelerator(name=name, count=n)


class Resources(Strict):
    accelerator: str = Field("cpu", description="NAME[:COUNT] per node from the catalog (e.g. L4:1, H100:8), or cpu")
    nodes: int = Field(1, ge=1, le=512, description="number of machines")
    processes_per_node: Union[Literal["auto"], int] = Field(
        "auto", description="training processes per node; auto = one per GPU, 1 on CPU (at most 1024)"
    )
    spot: bool = Field(False, description="use spot / preemptible capacity")
    disk_gb: int = Field(100, ge=1, le=16384, description="local disk per node in GB")
    max_runtime: Union[str, int] = Field("24h", description="wall-clock limit: 90m, 2h, 1d or seconds")
    instance_type: dict[str, str] = Field(
        default_factory=dict, description="per-provider instance type override, e.g. {aws: ml.g5.2xlarge}"
    )

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        """NAME[:COUNT] with NAME in the accelerator catalog (any spelling it accepts), or cpu."""
        accel = parse_accelerator(v)
        if not accel.is_cpu:
            from cloudtune.catalog import CatalogError, load_catalog

            try:
                load_catalog().normalize(accel.name)
            except CatalogError as exc:
                raise ValueError(f"{exc.message}; {exc.fix}") from None
        return str(accel)

    @field_validator("processes_per_node")
    @classmethod
    def _ppn(cls, v: Union[str, int]) -> Union[str, int]:
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError("processes_per_node must be from 1 to 1024, or 'auto'")
        return v

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _runtime(cls, v: Any) -> Union[str, int]:
        """A duration text or whole seconds, within parse_duration's range; a number of seconds becomes an int."""
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"max_runtime must be like 90m, 2h, 1d or a number of seconds, not {shown(v)}")
        seconds = parse_duration(v)
        return seconds if isinstance(v, float) else v

    @property
    def accel(self) -> Accelerator:
        return parse_accelerator(self.accelerator)

    @property
    def max_runtime_seconds(self) -> int:
        return parse_duration(self.max_runtime)


class LocalSettings(Strict):
    emulate: Literal["aws", "gcp", "azure"] = Field("aws", description="which cloud's container contract to reproduce")
    jobs_dir: str | None = Field(None, description="where job directories go; default $CLOUDTUNE_HOME/jobs")
    runtime: Literal["host", "image"] = Field(
        "host", description="host: this machine's Python environment; image: the emulated cloud's stock-image Python, "
        "torch and wheel lock in a cached virtual environment, started through that cloud's own start path")
    wheel_locks: str | None = Field(None, description="runtime image: a directory of wheel locks (default: cloudtune's own)")


class ProvidersSpec(BaseModel):
    """Per-provider settings. `local` is the core's; every other provider's section is validated by the settings
    model its launcher declares (`Launcher.settings_model`), when that provider is used. Which names are providers
    is the launcher registry's to say (`cloudtune.launcher.check_provider_names`), at plan time."""

    model_config = ConfigDict(extra="allow", validate_default=True)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @model_validator(mode="after")
    def _sections(self) -> "ProvidersSpec":
        for name, value in (self.__pydantic_extra__ or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"providers.{name} must be a mapping of settings, e.g. {{region: ...}}")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """The settings given for provider `name` in the spec (only the keys the user wrote)."""
        if name == "local":
            return self.local.model_dump(include=self.local.model_fields_set)
        return dict((self.__pydantic_extra__ or {}).get(name) or {})

