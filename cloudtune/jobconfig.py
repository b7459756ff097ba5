"""The runtime job config: what `cloudtune-run` needs from the spec, as plain JSON (no pydantic inside the
container's contract). Every launcher delivers it the way its cloud passes parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.spec import JobSpec, is_remote

MODEL_MARKERS = ("config.json", "adapter_config.json")


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


def find_saved_model(path: Path) -> Path | None:
    """The directory of a saved transformers model at `path`: `path` itself when it holds config.json (or a peft
    adapter_config.json), else its only subdirectory that does; None when there is none."""
    if not path.is_dir():
        return None
    if any((path / m).is_file() for m in MODEL_MARKERS):
        return path
    found = [d for d in sorted(path.iterdir()) if d.is_dir() and any((d / m).is_file() for m in MODEL_MARKERS)]
    return found[0] if len(found) == 1 else None


def check_local_inputs(spec: JobSpec) -> list[str]:
    """Reject, before anything is uploaded or run, local inputs that do not exist, a local `train.model` that
    is not a saved model, and what the preflight finds in the local data and model (encoding, format, fields,
    labels, tokenizer files, max_seq_len against the model's positions): `cloudtune.preflight.PreflightError`,
    exit 2. Returns warnings that do not stop the job. `spec` has been through `with_model_input`. Imports no
    torch."""
    local = {name: Path(uri) for name, uri in spec.inputs.items() if not is_remote(uri)}
    missing = sorted(name for name, path in local.items() if not path.exists())
    if missing:
        raise UnsupportedSpec(
            "inputs not found on this machine: " + ", ".join(f"{n} ({local[n]})" for n in missing),
            fix="check the paths (they resolve against the spec file's directory)",
        )
    model = spec.train.model if spec.train is not None else None
    if model in local and find_saved_model(local[model]) is None:
        raise UnsupportedSpec(
            f"train.model: {local[model]} is not a saved transformers model (no config.json in it or in one subdirectory)",
            fix="point train.model at a directory written by save_pretrained (config.json, weights, tokenizer), "
                "or give a hub id",
        )
    from cloudtune.preflight import check_spec_inputs

    return check_spec_inputs(spec)


def runtime_job(spec: JobSpec, inputs: dict[str, str], processes_per_node: int, code_uri: str | None = None) -> dict[str, Any]:
    """`inputs` are the URIs as the container sees them (the launcher's uploads already applied).

    Secrets travel as references only; `cloudtune-run` resolves them at start. A `train` job also carries
    `sources`: each input's path or URI as given in the spec, which the recipes name in their errors.
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
        job["sources"] = dict(sorted(spec.inputs.items()))
    else:
        job["command"] = spec.command
    if code_uri:
        job["code_uri"] = code_uri
    return job
