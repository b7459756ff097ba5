"""Write the hash-pinned wheel lock of a stock-image target (run by a maintainer, with network; never by a job).

    python -m cloudtune.kit.lockgen sagemaker-pytorch-py312   # or vertex-pytorch-py310, or all
    python -m cloudtune.kit.lockgen --keep sagemaker-pytorch-py312  # resolve again, the lock's versions kept
    python -m cloudtune.kit.lockgen --floors all              # re-read the floors of the locks as they are

What a job needs beyond the cloud's stock PyTorch image is the closure of `cloudtune[train]` minus torch (the
image has it), resolved by pip for the image's Python and platform, run by an interpreter of the image's Python
version (pip evaluates environment markers such as `python_version < "3.11"` for the Python that runs it, whatever
`--python-version` says; `cloudtune.kit.pythons.find_python` finds it under pyenv or on PATH). `--keep` passes the
existing lock's versions to pip as constraints: the dependencies are resolved again (a wheel a marker now asks for
is added) without moving any locked library to a newer release. torch is held out by offering pip a
dependency-free placeholder wheel of the image's torch version with a build tag (so pip prefers it to PyPI's);
the placeholder is left out of the lock. The lock records each wheel's name, version, file name, URL, sha256 and
size (pip's own installation report gives URL and hash; a HEAD request the size), its Requires-Dist lines, and
its floors: Requires-Python,
a Requires-Dist on torch, and the runtime torch floors pip cannot see (RUNTIME_FLOORS). A lock whose floors the
image breaks, or whose wheels require (for the image's Python) a distribution the lock lacks, is refused
(`cloudtune.kit.versions.check_lock`) and not written. The lock also records its roots (cloudtune's Requires-Dist
and the target's extra requirements) and the marker environment pip resolved with.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

from cloudtune.errors import CloudtuneError
from cloudtune.kit.bootstrap import LOCK_DIR, TARGETS, Target, load_lock, lock_from_json
from cloudtune.kit.pythons import find_python
from cloudtune.kit.versions import check_lock
from cloudtune.kit.wheel import cloudtune_wheel

# Runtime torch floors that no metadata declares: package -> (module in its wheel, function that enforces it).
# transformers switches PyTorch off below its floor (5.0: 2.2, 5.10: 2.4, 5.15: 2.5, 5.20: 2.6, read from the
# wheels); peft, accelerate and trl declare theirs (or none) in Requires-Dist and reach torch through transformers.
RUNTIME_FLOORS: dict[str, tuple[str, str]] = {
    "transformers": ("transformers/utils/import_utils.py", "is_torch_available"),
}
# Torch floors declared only under an extra the job never installs (pip cannot see them): package -> that extra.
# diffusers 0.42: `Requires-Dist: torch>=2.6; extra == "torch"`, and diffusers runs on the image's torch anyway.
EXTRA_FLOORS: dict[str, str] = {"diffusers": "torch"}
_PARSE_FLOOR = re.compile(r'>=\s*version\.parse\(\s*"(\d+(?:\.\d+)*)"\s*\)')


def _placeholder_torch(target: Target, out: Path) -> None:
    tag = f"{target.abi}-{target.abi}-{target.platforms[0]}"
    name = f"torch-{target.torch}-1-{tag}.whl"  # build tag 1: preferred over PyPI's untagged wheel
    info = f"torch-{target.torch}.dist-info"
    with zipfile.ZipFile(out / name, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {target.torch}\n")
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: cloudtune\nRoot-Is-Purelib: false\nTag: {tag}\nBuild: 1\n")
        zf.writestr(f"{info}/RECORD", "")


def _size(url: str) -> int:
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.headers["Content-Length"])


def metadata_floors(name: str, requires_python: str | None, requires_dist: list[str]) -> list[dict[str, str]]:
    """Floors a wheel declares: Requires-Python, and a Requires-Dist on torch outside any extra (or under the
    extra EXTRA_FLOORS names for this package)."""
    from packaging.requirements import Requirement

    floors = []
    if requires_python:
        floors.append({"on": "python", "spec": requires_python, "source": "METADATA Requires-Python"})
    extra = EXTRA_FLOORS.get(name.lower())
    for line in requires_dist:
        req = Requirement(line)
        if req.name.lower() != "torch" or not str(req.specifier):
            continue
        marker = str(req.marker or "")
        if "extra" not in marker or (extra and req.marker is not None and req.marker.evaluate({"extra": extra})):
            floors.append({"on": "torch", "spec": str(req.specifier), "source": f"METADATA Requires-Dist: {line}"})
    return floors


def runtime_floor(name: str, wheel_file: Path) -> dict[str, str]:
    """The torch floor `name` enforces at run time, read from its wheel's source (RUNTIME_FLOORS)."""
    module, function = RUNTIME_FLOORS[name]
    with zipfile.ZipFile(wheel_file) as zf:
        text = zf.read(module).decode()
    start = text.find(f"def {function}(")
    end = text.find("\ndef ", start + 1)
    found = _PARSE_FLOOR.search(text[start:end if end > 0 else None]) if start >= 0 else None
    if found is None:
        raise SystemExit(f"{wheel_file.name}: no torch floor found in {module} {function}(); read the function and "
                         "update cloudtune.kit.lockgen.RUNTIME_FLOORS / _PARSE_FLOOR before writing this lock")
    return {"on": "torch", "spec": f">={found.group(1)}", "source": f"{wheel_file.name}: {module} {function}()"}


def _fetch(url: str, dest: Path) -> Path:
    with urllib.request.urlopen(url, timeout=300) as resp, open(dest, "wb") as out:
        out.write(resp.read())
    return dest


def wheel_floors(name: str, url: str, requires_python: str | None, requires_dist: list[str]) -> list[dict[str, str]]:
    floors = metadata_floors(name, requires_python, requires_dist)
    if name.lower() in RUNTIME_FLOORS:
        with tempfile.TemporaryDirectory() as tmp:
            floors.append(runtime_floor(name.lower(), _fetch(url, Path(tmp) / url.rsplit("/", 1)[-1])))
    return floors


def resolver_python(target: Target) -> Path:
    """The interpreter that resolves `target`'s lock: one of the target's own Python version. pip evaluates
    environment markers (`exceptiongroup; python_version < "3.11"`) for the interpreter that runs it, whatever
    `--python-version` says, so a lock resolved by another Python misses or adds dependencies. Raises InvalidInput
    naming the missing version."""
    return find_python(target.python, why=f"the {target.name} lock must be resolved by the image's Python "
                       f"{target.python} (pip evaluates environment markers for the Python that runs it)")


def _resolve(target: Target, python: Path, work: Path, keep: list[str]) -> dict:
    """pip's installation report (JSON) of the target's requirements; `keep`: `name==version` constraints."""
    (work / "links").mkdir()
    (work / "constraints.txt").write_text("".join(f"{line}\n" for line in keep))
    _placeholder_torch(target, work / "links")
    wheel = cloudtune_wheel(work / "wheel")
    # -I: this process' PYTHONPATH and user site stay out of the target's interpreter
    cmd = [str(python), "-I", "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
           "--disable-pip-version-check", "--report", str(work / "report.json"), "--only-binary=:all:",
           "--python-version", target.python, "--implementation", "cp", "--abi", target.abi, "--target",
           str(work / "t"), "--find-links", str(work / "links"),
           *[a for p in target.platforms for a in ("--platform", p)],
           "--constraint", str(work / "constraints.txt"), f"torch=={target.torch}",
           f"{wheel.path}[{','.join(target.root_extras)}]" if target.root_extras else str(wheel.path),
           *target.extra, *target.pins]
    # PyPI itself, whatever this machine's pip configuration says (a local mirror's file:// URLs would be useless
    # to anyone else): no config files, the public index only
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}
    subprocess.run([*cmd[:5], "--index-url", "https://pypi.org/simple", *cmd[5:]], check=True, env=env)
    report = json.loads((work / "report.json").read_text())
    resolved = report.get("environment", {}).get("python_version")
    if resolved != target.python:
        raise SystemExit(f"{target.name}: pip resolved with Python {resolved}, not {target.python}")
    return report


def generate(target: Target, keep: bool = False) -> dict:
    """The lock of `target`, resolved now; `keep`: with the shipped lock's versions as constraints."""
    python = resolver_python(target)  # before any work: no interpreter, no lock
    pinned = [f"{w.name}=={w.version}" for w in load_lock(target.name).wheels] if keep else []
    with tempfile.TemporaryDirectory() as tmp:
        report = _resolve(target, python, Path(tmp), pinned)
    wheels, roots = [], list(target.extra) + list(target.pins)
    for item in report["install"]:
        meta = item["metadata"]
        name = meta["name"]
        if name.lower() == "cloudtune":
            roots = meta.get("requires_dist", []) + roots
        if name.lower() in ("torch", "cloudtune"):
            continue
        url = item["download_info"]["url"]
        if not url.startswith("https://files.pythonhosted.org/"):
            raise SystemExit(f"{name}: resolved to {url}, not a PyPI file URL")
        wheels.append({"name": name, "version": meta["version"], "filename": url.rsplit("/", 1)[-1],
                       "url": url, "sha256": item["download_info"]["archive_info"]["hashes"]["sha256"], "size": _size(url),
                       "floors": wheel_floors(name, url, meta.get("requires_python"), meta.get("requires_dist", [])),
                       "requires": meta.get("requires_dist", [])})
    wheels.sort(key=lambda w: w["filename"])
    return _lock_json(target, wheels, roots, report["environment"])


def _lock_json(target: Target, wheels: list[dict], roots: list[str] | None, environment: dict | None) -> dict:
    """The lock file's JSON. `roots`: what the job installs directly (cloudtune's Requires-Dist, then the target's
    extra requirements and pins); `environment`: the marker environment pip resolved with (its report's)."""
    lock = {"target": target.name, "python": target.python, "platforms": list(target.platforms),
            "image_torch": target.torch, "image": target.image, "image_source": target.source,
            "pins": list(target.pins), "floors_recorded": True}
    if roots is not None:  # the kernel's release and build string: this machine's, not the image's
        env = {k: v for k, v in (environment or {}).items() if k not in ("platform_release", "platform_version")}
        lock.update(roots=roots, root_extras=list(target.root_extras), resolved_with=env)
    return {**lock, "wheels": wheels}


def _wheel_metadata(url: str, wheel_file: Path | None) -> tuple[str | None, list[str]]:
    """(Requires-Python, Requires-Dist lines) from the index's PEP 658 metadata file, else from the wheel itself."""
    try:
        with urllib.request.urlopen(url + ".metadata", timeout=60) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError:
        if wheel_file is None:
            raise
        with zipfile.ZipFile(wheel_file) as zf:
            text = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    meta = Parser().parsestr(text)
    return meta.get("Requires-Python"), meta.get_all("Requires-Dist") or []


def refloor(target: Target, lock_dir: Path = LOCK_DIR) -> dict:
    """The existing lock of `target` with every wheel's floors read again (the index's metadata files, or the
    wheel where the index serves none), the wheels themselves unchanged."""
    data = json.loads((lock_dir / f"{target.name}.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for w in data["wheels"]:
            try:
                requires_python, requires_dist = _wheel_metadata(w["url"], None)
            except urllib.error.HTTPError:
                requires_python, requires_dist = _wheel_metadata(w["url"], _fetch(w["url"], Path(tmp) / w["filename"]))
            w["floors"] = wheel_floors(w["name"], w["url"], requires_python, requires_dist)
            w["requires"] = requires_dist
    return _lock_json(target, data["wheels"], data.get("roots"), data.get("resolved_with"))


def refuse_broken(target: Target, lock: dict) -> None:
    """SystemExit naming every floor the image breaks: such a lock is never written."""
    problems = check_lock(target, lock_from_json(lock))
    if problems:
        raise SystemExit(f"refused: the {target.name} lock would not run on its image:\n  " + "\n  ".join(problems))


def main(argv: list[str]) -> None:
    mode = argv[0] if argv and argv[0] in ("--floors", "--keep") else ""
    argv = argv[1:] if mode else argv
    names = list(TARGETS) if not argv or argv[0] == "all" else argv
    for name in names:
        try:
            lock = refloor(TARGETS[name]) if mode == "--floors" else generate(TARGETS[name], keep=mode == "--keep")
        except CloudtuneError as err:
            raise SystemExit(f"lockgen {name}: {err}") from None
        refuse_broken(TARGETS[name], lock)
        path = LOCK_DIR / f"{name}.json"
        path.write_text(json.dumps(lock, indent=1) + "\n")
        print(f"{path}: {len(lock['wheels'])} wheels, {sum(w['size'] for w in lock['wheels']) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
