"""The framework versions a stock-image job runs (the image's Python and torch, the wheel lock's transformers,
peft and accelerate), whether the lock's wheels can run on that image at all (`check_lock`, offline, from the
floors lockgen recorded), and how this machine differs from them: "passes locally" is only as good as that match."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cloudtune.errors import InvalidInput
from cloudtune.kit.bootstrap import LOCK_DIR, PROVIDER_TARGETS, TARGETS, Lock, Target, job_target, load_lock

PACKAGES = ("transformers", "peft", "accelerate")


@dataclass(frozen=True)
class TargetSoftware:
    """What a stock-image job of one cloud runs: the image's interpreter and torch, and the wheel lock installed
    on top of them (`pip install --no-index` from the lock's wheelhouse).

    provider: "aws" | "gcp" | "azure"; target: the lock's name (a key of `cloudtune.kit.bootstrap.TARGETS`);
    python: "3.12" (major.minor, as the image ships it); torch: "2.8.0" (the image's own build, never in the lock);
    lock: the lock file (JSON: {"target", "python", "image_torch", "image", "image_source", "pins",
    "floors_recorded", "roots": [requirement lines], "root_extras": ["train"], "resolved_with": {PEP 508 marker
    environment of the resolving interpreter}, "wheels": [{name, version, filename, url, sha256, size,
    floors: [{on, spec, source}], requires: [Requires-Dist lines]}]};
    read it with `cloudtune.kit.bootstrap.load_lock(target, lock.parent)`); image: the image's name as the cloud
    lists it. `check_lock(TARGETS[target], load_lock(target))` is empty for every shipped lock (CI checks it).
    """

    provider: str
    target: str
    python: str
    torch: str
    lock: Path
    image: str = ""


def target_software(provider: str, lock_dir: Path | None = None, *, train: bool = False) -> TargetSoftware:
    """The Python, torch and wheel lock a `provider` job runs when its spec names no `image:`: the cloud's stock
    image, or for a `train:` job (`train=True`) the image `cloudtune.kit.bootstrap.RECIPE_TARGETS` names instead.

    Pure: reads no file, imports no SDK. Raises InvalidInput for a provider with no stock image (local, or an
    unknown name). `lock_dir` (default: the locks shipped with cloudtune) only changes the returned lock path.
    """
    target = job_target(provider, train)
    if target is None:
        raise InvalidInput(f"provider {provider!r} has no stock image",
                           fix=f"use one of: {', '.join(sorted(PROVIDER_TARGETS))}")
    spec = TARGETS[target]
    return TargetSoftware(provider, target, spec.python, spec.torch, (lock_dir or LOCK_DIR) / f"{target}.json",
                          spec.image)


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
    pins = TARGETS[target].pins
    held = f"; held back to what the image's torch runs: {', '.join(pins)}" if pins else ""
    return f"the job runs Python {v['python']} and torch {v['torch']} (the image), {libs} (the wheel lock {target}{held})"


def check_lock(target: Target, lock: Lock) -> list[str]:
    """Each way `lock`'s wheels cannot run on `target`'s image, one line each naming the wheel, what it needs, its
    source and the image's version; empty when compatible. Reads only what lockgen recorded in the lock (offline).

    Two kinds: floors (`floor_problems`: Requires-Python, torch) and requirements (`requirement_problems`: a
    Requires-Dist that applies on the target's Python and names a distribution the lock lacks). A lock that does
    not record what either check reads is refused too.
    """
    return floor_problems(target, lock) + requirement_problems(target, lock)


def floor_problems(target: Target, lock: Lock) -> list[str]:
    """A floor is on "python" (every wheel's Requires-Python) or "torch" (a Requires-Dist on torch, or a runtime
    check pip cannot see, such as transformers' `is_torch_available`, which switches PyTorch off below its floor so
    that model classes raise ImportError at load). Needs `packaging` (a dependency of pip's tooling, pytest and
    transformers), imported here only.
    """
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    fix = f"To fix: pin the library below that floor in TARGETS[{target.name!r}].pins, or move the target to an " \
          f"image that meets it, then `python -m cloudtune.kit.lockgen {target.name}`"
    if not lock.floors_recorded:
        return [f"lock {lock.target}: no floors recorded, so nothing shows it runs on {target.image or target.name}. "
                f"To fix: `python -m cloudtune.kit.lockgen --floors {target.name}`"]
    have = {"python": target.python, "torch": target.torch}
    problems = []
    for wheel in lock.wheels:
        for floor in wheel.floors:
            try:
                ok = SpecifierSet(floor.spec).contains(have[floor.on], prereleases=True)
            except (InvalidSpecifier, KeyError):
                ok = False
            if not ok:
                problems.append(f"{wheel.name} {wheel.version} needs {floor.on} {floor.spec} ({floor.source}); the "
                                f"image of {target.name} has {floor.on} {have.get(floor.on, '?')}. {fix}")
    return problems


def marker_environment(target: Target) -> dict[str, str]:
    """The PEP 508 marker environment of `target`'s image: CPython `target.python` on Linux, the machine of its
    platform tags. The patch release is not documented for the stock images: "3.10" is taken as "3.10.0" in
    python_full_version (no locked wheel's marker tests a patch release; see docs/images.md)."""
    machine = "aarch64" if any(p.endswith("aarch64") for p in target.platforms) else "x86_64"
    full = f"{target.python}.0"
    return {"implementation_name": "cpython", "implementation_version": full, "os_name": "posix",
            "platform_machine": machine, "platform_python_implementation": "CPython", "platform_release": "",
            "platform_system": "Linux", "platform_version": "", "python_full_version": full,
            "python_version": target.python, "sys_platform": "linux"}


IMAGE_PROVIDES = ("torch",)  # distributions the stock image has and the lock holds out
# The marker variables of the resolving interpreter that must be the image's: those the locked wheels' Requires-Dist
# test outside extras (python_version, platform_machine, platform_system, sys_platform, implementation_name; see
# docs/images.md). The patch release and the kernel's release are the resolving machine's own.
RESOLVER_KEYS = ("python_version", "sys_platform", "platform_system", "platform_machine", "implementation_name")


def requirement_problems(target: Target, lock: Lock) -> list[str]:
    """Each Requires-Dist that applies on `target` (markers evaluated for its Python with `packaging.markers`, the
    extras requested along the way included) and that the lock cannot satisfy: a distribution not in the lock, or
    one whose locked version is outside the specifier. Walks from the lock's roots (cloudtune[train] and the target's
    extra requirements) and from every locked wheel. Also refuses a lock resolved by another Python or machine than the target's (RESOLVER_KEYS:
    pip evaluates markers for the interpreter that runs it, whatever `--python-version` says) and a lock with no
    requirements recorded.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    regen = f"To fix: `python -m cloudtune.kit.lockgen {target.name}` (it resolves with a Python {target.python})"
    if lock.roots is None:
        return [f"lock {lock.target}: no requirements recorded, so nothing shows its wheels are complete. {regen}"]
    env = marker_environment(target)
    resolved = dict(lock.resolved_with)
    problems = [f"lock {lock.target} was resolved with {key} {resolved.get(key)}, not the image's {env[key]}: pip "
                f"evaluated its markers for another machine. {regen}"
                for key in RESOLVER_KEYS if resolved.get(key) != env[key]]
    wheels = {canonicalize_name(w.name): w for w in lock.wheels}
    requires = {canonicalize_name(w.name): w.requires for w in lock.wheels} | {"": lock.roots}
    # every locked wheel is installed (the image runtime installs them all), so each is walked from, beside the roots
    wanted: dict[str, set[str]] = {name: set() for name in wheels} | {"": set(lock.root_extras)}
    todo = list(wanted)
    while todo:
        node = todo.pop()
        for line in requires[node]:
            req = Requirement(line)
            dep = canonicalize_name(req.name)
            extras = {""} | wanted[node]
            if dep in IMAGE_PROVIDES or not any(req.marker is None or req.marker.evaluate({**env, "extra": e})
                                                for e in extras):
                continue
            owner = f"{wheels[node].name} {wheels[node].version}" if node else "the job (cloudtune and the target)"
            have = wheels.get(dep)
            if have is None or not req.specifier.contains(have.version, prereleases=True):
                found = "is not in the lock" if have is None else f"is locked at {have.version}"
                problems.append(f"{owner} requires `{line}`, which applies on Python {target.python}, but {dep} "
                                f"{found}. {regen}")
                continue
            if dep not in wanted or not set(req.extras) <= wanted[dep]:
                wanted[dep] = wanted.get(dep, set()) | set(req.extras)
                todo.append(dep)
    return list(dict.fromkeys(problems))  # a node seen again with more extras repeats its lines


def _here(name: str) -> str | None:
    if name == "python":
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        return version(name).split("+")[0]  # 2.13.0+cpu -> 2.13.0
    except PackageNotFoundError:
        return None


def local_software() -> dict[str, str]:
    """{"python", "torch", "transformers", "peft", "accelerate"} -> version installed here, for those installed
    (reads package metadata; imports nothing)."""
    found = {name: _here(name) for name in ("python", "torch", *PACKAGES)}
    return {name: v for name, v in found.items() if v is not None}


def image_note(image: str) -> str:
    """The local warning for a spec with `image:`: the image's versions cannot be read offline, so the user is
    told which ones this machine runs instead."""
    here = ", ".join(f"{name} {v}" for name, v in local_software().items())
    return (f"warning: image {image} is not used locally: the job runs this machine's {here}; cloudtune cannot read "
            "the image's versions offline, so a job that passes here may still fail there if they differ (run the "
            "image itself, or compare `python -c 'import torch, transformers'` in it)")


def local_mismatches(target: str) -> list[str]:
    """`name X here, Y on <target>` for each framework whose version here differs (reads metadata; imports nothing)."""
    out = []
    for name, wanted in target_versions(target).items():
        have = _here(name)
        if have is not None and have != wanted:
            out.append(f"{name} {have} here, {wanted} on {target}")
    return out
