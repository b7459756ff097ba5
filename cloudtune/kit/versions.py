"""The framework versions a stock-image job runs (the image's Python and torch, the wheel lock's transformers,
peft and accelerate), and how this machine differs from them: "passes locally" is only as good as that match."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cloudtune.errors import InvalidInput
from cloudtune.kit.bootstrap import LOCK_DIR, PROVIDER_TARGETS, TARGETS, load_lock

PACKAGES = ("transformers", "peft", "accelerate")


@dataclass(frozen=True)
class TargetSoftware:
    """What a stock-image job of one cloud runs: the image's interpreter and torch, and the wheel lock installed
    on top of them (`pip install --no-index` from the lock's wheelhouse).

    provider: "aws" | "gcp" | "azure"; target: the lock's name (a key of `cloudtune.kit.bootstrap.TARGETS`);
    python: "3.12" (major.minor, as the image ships it); torch: "2.8.0" (the image's own build, never in the lock);
    lock: the lock file (JSON: {"target", "python", "image_torch", "wheels": [{name, version, filename, url,
    sha256, size}], "floors": ...}; read it with `cloudtune.kit.bootstrap.load_lock(target, lock.parent)`).
    """

    provider: str
    target: str
    python: str
    torch: str
    lock: Path


def target_software(provider: str, lock_dir: Path | None = None) -> TargetSoftware:
    """The Python, torch and wheel lock a `provider` job runs on its stock image (no `image:` in the spec).

    Pure: reads no file, imports no SDK. Raises InvalidInput for a provider with no stock image (local, or an
    unknown name). `lock_dir` (default: the locks shipped with cloudtune) only changes the returned lock path.
    """
    target = PROVIDER_TARGETS.get(provider)
    if target is None:
        raise InvalidInput(f"provider {provider!r} has no stock image",
                           fix=f"use one of: {', '.join(sorted(PROVIDER_TARGETS))}")
    spec = TARGETS[target]
    return TargetSoftware(provider, target, spec.python, spec.torch, (lock_dir or LOCK_DIR) / f"{target}.json")


def target_versions(target: str, lock_dir: Path | None = None) -> dict[str, str]:
    """{"python", "torch", "transformers", "peft", "accelerate"} -> version on `target`."""
    spec = TARGETS[target]
    found = {"python": spec.python, "torch": spec.torch}
    for wheel in load_lock(target, lock_dir).wheels:
        if wheel.name.lower() in PACKAGES:
            found[wheel.name.lower()] = wheel.version
    return found


def versions_note(target: str, lock_dir: Path | None = None) -> str:
    v = target_versions(target, lock_dir)
    libs = ", ".join(f"{name} {v[name]}" for name in PACKAGES if name in v)
    return f"the job runs Python {v['python']} and torch {v['torch']} (the image), {libs} (the wheel lock {target})"


def _here(name: str) -> str | None:
    if name == "python":
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        return version(name).split("+")[0]  # 2.13.0+cpu -> 2.13.0
    except PackageNotFoundError:
        return None


def local_mismatches(target: str) -> list[str]:
    """`name X here, Y on <target>` for each framework whose version here differs (reads metadata; imports nothing)."""
    out = []
    for name, wanted in target_versions(target).items():
        have = _here(name)
        if have is not None and have != wanted:
            out.append(f"{name} {have} here, {wanted} on {target}")
    return out
