"""The runtime job config: what `cloudtune-run` needs from the spec, as plain JSON (no pydantic inside the
container's contract). Every launcher delivers it the way its cloud passes parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.spec import JobSpec, is_remote

MODEL_MARKERS = ("config.json", "adapter_config.json", "model_index.json", "pytorch_lora_weights.safetensors")


def with_model_input(spec: JobSpec, provider: str | None = None) -> JobSpec:
    """Turn a local `train.model` path (and a local `train.base_model`) into an input (named `model`, `base_model`),
    so it travels like any data. A `train.model: job:<JOB>` must have been resolved already
    (`cloudtune.jobmodel.resolve_job_model`, which `cloudtune.api` runs before planning): JobModelError otherwise.

    The cloud container cannot see this machine's disk; the local launcher does the same, so the
    emulation stays faithful.
    """
    if spec.train is None:
        return spec
    from cloudtune.jobmodel import resolve_job_model

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


def find_saved_model(path: Path) -> Path | None:
    """The directory of a saved transformers model at `path`: `path` itself when it holds config.json (or a peft
    adapter_config.json), else its only subdirectory that does; None when there is none."""
    if not path.is_dir():
        return None
    if any((path / m).is_file() for m in MODEL_MARKERS):
        return path
    found = [d for d in sorted(path.iterdir()) if d.is_dir() and any((d / m).is_file() for m in MODEL_MARKERS)]
    return found[0] if len(found) == 1 else None


ARCHIVE_LOCK = ".cloudtune-unpack.lock"


def model_archive(path: Path) -> Path | None:
    """The one `*.tar.gz` file in the directory `path` when it holds no saved model (a SageMaker channel of a
    model.tar.gz delivers the file itself, not its content); None otherwise."""
    if not path.is_dir() or find_saved_model(path) is not None:
        return None
    files = [p for p in path.iterdir() if p.is_file() and p.name != ARCHIVE_LOCK]
    return files[0] if len(files) == 1 and files[0].name.endswith(".tar.gz") else None


def unpacked_model_archive(path: Path) -> Path | None:
    """The saved model inside the archive of `model_archive(path)`, unpacked once per machine (None when there is
    no archive, or no saved model in it).

    It is unpacked with the kit's safe extraction (links and paths that leave the directory refused) into
    `<path>/<name without .tar.gz>/` (a temp directory when `path` is read-only), under a lock so that the processes
    of one node unpack it once, and renamed into place when complete: a process that finds it there reuses it.
    Raises JobInputError for an archive that cannot be unpacked safely."""
    import fcntl
    import hashlib
    import os
    import tempfile

    from cloudtune.errors import InvalidInput, JobInputError

    archive = model_archive(path)
    if archive is None:
        return None
    root = path if os.access(path, os.W_OK) else Path(tempfile.gettempdir()) / (
        "cloudtune-model-" + hashlib.sha256(str(archive).encode()).hexdigest()[:16])
    root.mkdir(parents=True, exist_ok=True)
    final = root / archive.name[: -len(".tar.gz")]
    with open(root / ARCHIVE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            from cloudtune.kit.download import safe_extract

            import shutil

            partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=root))
            try:  # one level down: a partial copy left by a killed process is never taken for the model
                safe_extract(archive, partial / "content")
                os.replace(partial / "content", final)
            except InvalidInput as exc:
                raise JobInputError(f"train.model: {exc.message}") from None
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return find_saved_model(final)


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
    from cloudtune.hashing import check_input_tree

    sized = [check_input_tree(name, path) for name, path in sorted(local.items())]  # stat only, before any hashing
    model = spec.train.model if spec.train is not None else None
    if model in local and find_saved_model(local[model]) is None:
        raise UnsupportedSpec(
            f"train.model: {local[model]} is not a saved transformers model (no config.json in it or in one subdirectory)",
            fix="point train.model at a directory written by save_pretrained (config.json, weights, tokenizer), "
                "or give a hub id",
        )
    from cloudtune.preflight import check_spec_inputs

    return [w for w in sized if w] + list(check_spec_inputs(spec) or [])


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
