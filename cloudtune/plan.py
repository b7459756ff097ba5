"""Plan: the compiled, provider-native request, the uploads it needs and its cost. The dry run prints it;
submit consumes it and nothing else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Upload:
    """One local file or directory that must reach `destination` before the job starts.

    `build`, when set, is the recipe `submit()` stages `source` from (see `cloudtune.kit.staging`): the plan names
    the file and its hash but never writes it."""

    source: str
    destination: str
    bytes: int
    sha256: str
    build: dict[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    provider: str
    job_name: str
    request: dict[str, Any]
    uploads: tuple[Upload, ...]
    instance_type: str
    instance_count: int
    estimated_usd_per_hour: float | None
    model_uri: str | None = None
    notes: tuple[str, ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)
    cost_basis: str = "on-demand"  # what estimated_usd_per_hour is: on-demand, spot, or an upper bound (kit.cost)
    request_format: str = "json"  # how the dry run prints `request`: json, or yaml (Azure ML's job YAML)
    memory: dict[str, Any] | None = None  # the estimate per GPU of a train job (cloudtune.memory_check); None: none made

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["memory"] is None:  # plans made without the check (a launcher called directly) read as before
            del data["memory"]
        data["uploads"] = [{k: v for k, v in asdict(u).items() if k != "build" or v is not None} for u in self.uploads]
        data["notes"] = list(self.notes)
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        values = dict(data)
        values["uploads"] = tuple(Upload(**u) for u in data.get("uploads", ()))
        values["notes"] = tuple(data.get("notes", ()))
        return cls(**values)
