"""The runtime job config: what `cloudtune-run` needs from the spec, as plain JSON (no pydantic inside the
container's contract). The plan writes it (`runtime_job`); every launcher delivers it the way its cloud passes
parameters (a SageMaker hyperparameter, a Vertex AI argument, an Azure ML input file, the local job directory); the
container reads it (`cloudtune.runtime.context`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts.clouds import is_remote

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec


def runtime_job(spec: JobSpec, inputs: dict[str, str], processes_per_node: int, code_uri: str | None = None) -> dict[str, Any]:
    """`inputs` are the URIs as the container sees them (the launcher's uploads already applied).

    Secrets travel as references only; `cloudtune-run` resolves them at start. A `train` job also carries
    `sources`: each input's URI, or a local input's path relative to the code dir (the spec's directory unless
    `code` is set), which the recipes name in their errors. No absolute path of this machine travels: it would name
    local directories in the request and make two users' identical jobs differ.
    """
    job: dict[str, Any] = {
        "name": spec.name,
        "inputs": dict(sorted(inputs.items())),
        "processes_per_node": processes_per_node,
        "checkpoint": spec.checkpoint.model_dump(mode="json"),
        "env": dict(sorted(spec.env.items())),
        "secrets": dict(sorted(spec.secrets.items())),
    }
    if spec.train is not None:
        job["train"] = spec.train.model_dump(mode="json")
        # the user's own name (local path or URI) of each input, so that errors inside the job name it
        job["sources"] = {name: uri if is_remote(uri) else portable_path(uri, spec.code)
                          for name, uri in sorted(spec.inputs.items())}
    else:
        job["command"] = spec.command
    if code_uri:
        job["code_uri"] = code_uri
    if getattr(spec, "sweep", None) is not None:  # a cloud sweep's trial applies its values in the container
        job["sweep"] = spec.sweep.model_dump(mode="json")
    return job


def portable_path(path: str, base: str) -> str:
    """`path` (absolute, as the spec resolved it) relative to `base` (absolute), in POSIX form: `data/train.jsonl`,
    `../shared/eval.jsonl`."""
    return Path(os.path.relpath(path, base)).as_posix()
