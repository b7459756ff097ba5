"""A job's local inputs at plan time: a local model made an input like the data (`with_model_input`), and every local
input checked before anything is uploaded or run (`check_local_inputs`: exists, sized, a saved model where a model
is named, and the preflight of its content)."""

from __future__ import annotations

from pathlib import Path

from cloudtune.contracts.clouds import is_remote
from cloudtune.data.savedmodel import find_saved_model
from cloudtune.errors import UnsupportedSpec
from cloudtune.hashing import check_input_tree
from cloudtune.jobmodel import resolve_job_model
from cloudtune.preflight import check_spec_inputs
from cloudtune.spec import JobSpec


def with_model_input(spec: JobSpec, provider: str | None = None) -> JobSpec:
    """Turn a local `train.model` path (and a local `train.base_model`) into an input (named `model`, `base_model`),
    so it travels like any data. A `train.model: job:<JOB>` must have been resolved already
    (`cloudtune.jobmodel.resolve_job_model`, which `cloudtune.api` runs before planning): JobModelError otherwise.

    The cloud container cannot see this machine's disk; the local launcher does the same, so the
    emulation stays faithful.
    """
    if spec.train is None:
        return spec
    spec = resolve_job_model(spec, provider, None)
    return _local_as_input(_local_as_input(spec, "model"), "base_model")


def _local_as_input(spec: JobSpec, field: str) -> JobSpec:
    value = getattr(spec.train, field)
    if value is None or value in spec.inputs or not value.startswith("/"):
        return spec
    name = field
    while name in spec.inputs:
        name += "_"
    inputs = {**spec.inputs, name: value}
    return spec.model_copy(update={"inputs": inputs, "train": spec.train.model_copy(update={field: name})})


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
    sized = [check_input_tree(name, path) for name, path in sorted(local.items())]  # stat only, before any hashing
    model = spec.train.model if spec.train is not None else None
    if model in local and find_saved_model(local[model]) is None and spec.train.task == "text-to-image":
        raise UnsupportedSpec(f"train.model: {local[model]} is not a diffusers pipeline dir (no model_index.json in it "
                              f"or in one subdirectory)", fix="save the pipeline with pipeline.save_pretrained(DIR), "
                              "or name a Hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5")
    if model in local and find_saved_model(local[model]) is None:
        raise UnsupportedSpec(
            f"train.model: {local[model]} is not a saved transformers model (no config.json in it or in one subdirectory)",
            fix="point train.model at a directory written by save_pretrained (config.json, weights, tokenizer), "
                "or give a hub id",
        )
    return [w for w in sized if w] + list(check_spec_inputs(spec) or [])
