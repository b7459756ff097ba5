"""Local paths in a spec: the file-system limits a path must meet, and making inputs, model and code absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune.contracts.clouds import is_remote
from cloudtune.errors import SpecError, SpecIssue
from cloudtune.spec.base import shown
from cloudtune.spec.origin import field_path, longest_prefix
from cloudtune.spec.job import JobSpec

MAX_PATH_BYTES = 4095
MAX_PATH_COMPONENT_BYTES = 255


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file on this machine (or a cloud's), or None: a NUL byte, a component over 255
    bytes, or over 4095 bytes in all (the Linux limits; ENAMETOOLONG otherwise)."""
    if "\x00" in path:
        return "holds a NUL byte"
    encoded = path.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_PATH_BYTES:
        return f"is {len(encoded):,} bytes long; a path may have at most {MAX_PATH_BYTES}"
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in path.split("/")), default=0)
    if longest > MAX_PATH_COMPONENT_BYTES:
        return f"has a {longest}-byte file or directory name; each may have at most {MAX_PATH_COMPONENT_BYTES} bytes"
    return None



def _looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..")


PATH_HINT = "give a path the file system accepts: no NUL byte, each name at most 255 bytes, at most 4095 bytes in all"


def resolve_paths(spec: JobSpec, base_dir: Path, *, source: str = "<spec>",
                  lines: dict[tuple[str, ...], int] | None = None) -> JobSpec:
    """Return a copy with local input paths, a local model path and `code` made absolute.

    Every local path (and `providers.local.jobs_dir`) is checked as given and once resolved, so that validation,
    the dry run and the job agree: SpecError names each path the file system would refuse (see `path_problem`)."""
    issues: list[SpecIssue] = []

    def absolute(loc: tuple[str, ...], value: str, data: bool = True) -> str:
        problem = path_problem(value)
        resolved, hint = value, PATH_HINT
        if problem is None:
            try:
                resolved = str((base_dir / Path(value).expanduser()).resolve())
            except (RuntimeError, OSError, ValueError) as exc:  # ~nosuchuser, a symlink loop
                issues.append(SpecIssue(field_path(loc), f"the path {shown(value)} cannot be resolved ({exc})",
                                        longest_prefix(loc, lines or {}), "check the path: a ~user must name a user of "
                                        "this machine, and no symbolic link may point back at itself"))
                return value
            else:
                later = path_problem(resolved)
                problem = f"resolves to a path that {later}" if later else None
                if problem is None and data and _system_path(resolved):
                    problem = f"resolves to {shown(resolved)}, which {_system_path(resolved)}"
                    hint = "point at a file or directory that holds the data (copy it there first)"
        if problem:
            issues.append(SpecIssue(field_path(loc), f"the path {shown(value)} {problem}",
                                    longest_prefix(loc, lines or {}), hint))
        return resolved

    inputs = {k: (v if is_remote(v) else absolute(("inputs", k), v)) for k, v in spec.inputs.items()}
    update: dict[str, Any] = {"inputs": inputs, "code": absolute(("code",), spec.code, data=False)}
    if spec.include:
        update["include"] = [absolute(("include", str(i)), v, data=False) for i, v in enumerate(spec.include)]
    if spec.train is not None:
        paths: dict[str, Any] = {}
        for key in ("model", "base_model"):
            model = getattr(spec.train, key)
            if model is None or model.startswith("job:"):
                continue
            if model not in spec.inputs and not is_remote(model) and (_looks_local(model) or _exists(base_dir, model)):
                paths[key] = absolute(("train", key), model)
        if paths:
            update["train"] = spec.train.model_copy(update=paths)
    jobs_dir = spec.providers.local.jobs_dir
    if jobs_dir is not None:  # relative to the spec's directory, as every other path in it
        local = spec.providers.local.model_copy(update={"jobs_dir": absolute(("providers", "local", "jobs_dir"), jobs_dir)})
        update["providers"] = spec.providers.model_copy(update={"local": local})
    if issues:
        raise SpecError(source, issues)
    return spec.model_copy(update=update)


SYSTEM_DIRS = ("/proc", "/sys", "/dev")
"""Virtual file systems: their files are not data (reading some blocks or fails, /proc/self/root is the whole disk)."""


def _system_path(resolved: str) -> str | None:
    """Why a resolved local path cannot hold a job's data or files, or None: the root, or a virtual file system."""
    if resolved == "/":
        return "is the root of the file system"
    top = next((d for d in SYSTEM_DIRS if resolved == d or resolved.startswith(d + "/")), None)
    if top is not None and not resolved.startswith("/dev/shm"):
        return f"is in {top}, a virtual file system, not data"
    return None


def _exists(base_dir: Path, name: str) -> bool:
    """Whether `name` is an existing path under `base_dir` (a name the file system refuses is not one)."""
    if path_problem(name) or path_problem(str(base_dir / name)):
        return False
    try:
        return (base_dir / name).exists()
    except (OSError, ValueError):
        return False

