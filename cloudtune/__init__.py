"""cloudtune: fine-tune pretrained models on managed cloud training services from one job spec.

Public API (imported lazily so `cloudtune --help` stays fast):
    cloudtune.launch(spec_or_path, provider="local", dry_run=False, **overrides) -> Job | Plan
    cloudtune.get_job(job_id) -> Job
    cloudtune.list_jobs() -> list[JobRecord]
    cloudtune.JobSpec                      build specs in code
`cloudtune.api.plan(...)` compiles without submitting (the same as launch(dry_run=True)).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "launch": "cloudtune.api",
    "get_job": "cloudtune.api",
    "list_jobs": "cloudtune.api",
    "Job": "cloudtune.api",
    "JobSpec": "cloudtune.spec",
    "load_spec": "cloudtune.spec",
    "Plan": "cloudtune.plan",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cloudtune' has no attribute {name!r}")
