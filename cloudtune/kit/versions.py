"""The framework versions a stock-image job runs (the image's Python and torch, the wheel lock's transformers,
peft and accelerate), and how this machine differs from them: "passes locally" is only as good as that match."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cloudtune.kit.bootstrap import TARGETS, load_lock

PACKAGES = ("transformers", "peft", "accelerate")


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
