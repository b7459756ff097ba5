"""cloudtune: fine-tune pretrained models on managed cloud training services from one job spec.

Public API (imported lazily so `cloudtune --help` stays fast):
    cloudtune.launch(spec_or_path, provider="local", dry_run=False, **overrides) -> Job | Plan
    cloudtune.plan(spec_or_path, provider="local", **overrides) -> Plan   compile without submitting (the dry run)
    cloudtune.get_job(job_id) -> Job
    cloudtune.list_jobs() -> list[JobRecord]
    cloudtune.JobSpec(...)                 build specs in code; a mistake is a SpecError naming the field
`cloudtune.plan` is the function `cloudtune.api.plan`, also once the module that defines the Plan type
(`cloudtune.plan`, `from cloudtune.plan import Plan`) has been imported.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from cloudtune.version import __version__

_EXPORTS = {
    "launch": "cloudtune.api",
    "plan": "cloudtune.api",
    "get_job": "cloudtune.api",
    "list_jobs": "cloudtune.api",
    "Job": "cloudtune.api",
    "JobSpec": "cloudtune.spec:CodeJobSpec",
    "load_spec": "cloudtune.spec",
    "Plan": "cloudtune.plan",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        module, _, attr = _EXPORTS[name].partition(":")
        return getattr(import_module(module), attr or name)
    raise AttributeError(f"module 'cloudtune' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The package's module type: the name `plan` is the function cloudtune.api.plan. Importing the submodule
    cloudtune.plan would otherwise bind the module over that name (the import system sets each submodule as an
    attribute of its package); the setter keeps the module in sys.modules only, where imports find it."""

    @property
    def plan(self) -> Any:
        from cloudtune.api import plan

        return plan

    @plan.setter
    def plan(self, module: Any) -> None:  # the import system binding the submodule; sys.modules holds it
        pass


sys.modules[__name__].__class__ = _Package
