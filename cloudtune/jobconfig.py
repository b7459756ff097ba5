"""The runtime job config: what `cloudtune-run` needs from the spec, as plain JSON (no pydantic inside the
container's contract). Every launcher delivers it the way its cloud passes parameters."""

from __future__ import annotations

from typing import Any

from cloudtune.spec import JobSpec


def with_model_input(spec: JobSpec) -> JobSpec:
    """Turn a local `train.model` path into an input (named `model`), so it travels like any data.

    The cloud container cannot see this machine's disk; the local launcher does the same, so the
    emulation stays faithful.
    """
    if spec.train is None or spec.train.model in spec.inputs or not spec.train.model.startswith("/"):
        return spec
    name = "model"
    while name in spec.inputs:
        name += "_"
    inputs = {**spec.inputs, name: spec.train.model}
    return spec.model_copy(update={"inputs": inputs, "train": spec.train.model_copy(update={"model": name})})


def runtime_job(spec: JobSpec, inputs: dict[str, str], processes_per_node: int, code_uri: str | None = None) -> dict[str, Any]:
    """`inputs` are the URIs as the container sees them (the launcher's uploads already applied).

    Secrets travel as references only; `cloudtune-run` resolves them at start.
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
    else:
        job["command"] = spec.command
    if code_uri:
        job["code_uri"] = code_uri
    return job
