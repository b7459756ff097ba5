"""A saved model on disk, by its files: where in a directory the saved transformers (or diffusers, peft) model is,
and whether a directory holds a model archive instead (a SageMaker channel of another job's model.tar.gz). Read by
the plan side (the preflight, the memory check, the local inputs check) and in the container. Stdlib only."""

from __future__ import annotations

from pathlib import Path

MODEL_MARKERS = ("config.json", "adapter_config.json", "model_index.json", "pytorch_lora_weights.safetensors")


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
