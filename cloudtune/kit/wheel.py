"""A wheel of the running `cloudtune`, to carry in the job's code bundle.

The clouds' stock PyTorch images have no cloudtune, so the container pip-installs the exact cloudtune
that planned the job. Choice: the wheel is assembled here directly (a zip of the installed `cloudtune`
package files plus generated `.dist-info`), not with `pip wheel`:

- it takes ~50 ms instead of seconds (no subprocess, no build isolation, no network for setuptools);
- it is byte-for-byte deterministic (fixed zip timestamps, sorted entries), so the bundle that
  carries it has the same sha256 on every machine and a relaunch uploads nothing;
- it works the same for an editable checkout and for a regular install.

`wheel_bytes()` builds it in memory (a plan writes nothing); `cloudtune_wheel(dir)` also writes it, cached
under `<dir>/<version>-<source hash>/`. Metadata comes from the
checkout's `pyproject.toml` when cloudtune runs from a source tree (so an editable install's stale
egg-info cannot leak in), else from the installed distribution's metadata. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from cloudtune.settings import cloudtune_home

_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Wheel:
    path: Path
    filename: str
    version: str
    source_hash: str


@dataclass(frozen=True)
class _Meta:
    name: str
    version: str
    requires_python: str | None
    requires: tuple[str, ...]
    extras: tuple[str, ...]
    entry_points: str  # entry_points.txt text


def _package_dir() -> Path:
    return Path(__file__).resolve().parent.parent  # cloudtune/kit/wheel.py -> cloudtune/


def _package_files(pkg: Path) -> list[tuple[str, Path]]:
    """(archive path, file) for every file of the package, sorted; caches and bytecode left out."""
    out: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(pkg):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(root) / name
            rel = path.relative_to(pkg.parent).as_posix()
            out.append((rel, path))
    out.sort()
    return out


def _meta_from_pyproject(pyproject: Path) -> _Meta | None:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    project = data.get("project") or {}
    if project.get("name") != "cloudtune" or "version" not in project:
        return None
    requires = list(project.get("dependencies") or [])
    extras = sorted((project.get("optional-dependencies") or {}))
    for extra in extras:
        for req in project["optional-dependencies"][extra]:
            requires.append(f'{req}; extra == "{extra}"')
    groups: dict[str, dict[str, str]] = {}
    if project.get("scripts"):
        groups["console_scripts"] = dict(project["scripts"])
    for group, eps in sorted((project.get("entry-points") or {}).items()):
        groups[group] = dict(eps)
    text = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(eps.items())) + "\n" for g, eps in sorted(groups.items()))
    return _Meta("cloudtune", str(project["version"]), project.get("requires-python"), tuple(requires), tuple(extras), text)


def _meta_from_installed() -> _Meta:
    from importlib.metadata import distribution

    dist = distribution("cloudtune")
    return _Meta(
        "cloudtune",
        dist.version,
        dist.metadata.get("Requires-Python"),
        tuple(dist.requires or ()),
        tuple(dist.metadata.get_all("Provides-Extra") or ()),
        dist.read_text("entry_points.txt") or "",
    )


def _metadata(pkg: Path) -> _Meta:
    pyproject = pkg.parent / "pyproject.toml"
    found = _meta_from_pyproject(pyproject) if pyproject.is_file() else None
    return found or _meta_from_installed()


# Dependencies of the launching machine only: the code bundle's scan (cloudtune.bundle, cloudtune.secretfiles) and the
# local sweep driver (optuna: cloudtune.local.sweep asks and tells on the launching machine; a trial only reads its
# values). A job never bundles or drives a sweep, so the carried wheel does not require them and the image locks
# need not hold them.
LAUNCH_SIDE_ONLY: tuple[str, ...] = ("detect-secrets", "pathspec", "optuna")


def _launch_side_only(requirement: str) -> bool:
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-") in LAUNCH_SIDE_ONLY


def _metadata_text(meta: _Meta) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {meta.name}", f"Version: {meta.version}",
             "Summary: cloudtune (carried into a cloud job by its launcher)"]
    if meta.requires_python:
        lines.append(f"Requires-Python: {meta.requires_python}")
    lines += [f"Provides-Extra: {e}" for e in meta.extras]
    lines += [f"Requires-Dist: {r}" for r in meta.requires if not _launch_side_only(r)]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def source_hash(pkg: Path | None = None) -> tuple[str, _Meta, list[tuple[str, Path]]]:
    pkg = pkg or _package_dir()
    meta = _metadata(pkg)
    files = _package_files(pkg)
    h = hashlib.sha256()
    h.update(_metadata_text(meta).encode() + b"\0" + meta.entry_points.encode() + b"\0")
    for rel, path in files:
        h.update(rel.encode() + b"\0" + _file_digest(path).encode() + b"\n")
    return h.hexdigest(), meta, files


_DIGESTS: dict[Path, tuple[int, int, str]] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a package file, read again only when its size or mtime changed (a plan and the submit that stages
    it, in one process, hash the package once)."""
    st = path.stat()
    known = _DIGESTS.get(path)
    if known is None or known[:2] != (st.st_size, st.st_mtime_ns):
        known = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        _DIGESTS[path] = known
    return known[2]


def _build(meta: _Meta, files: list[tuple[str, Path]]) -> bytes:
    dist_info = f"{meta.name}-{meta.version}.dist-info"
    entries: list[tuple[str, bytes, int]] = [(rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
                                              for rel, path in files]
    entries.append((f"{dist_info}/METADATA", _metadata_text(meta).encode(), 0o644))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: cloudtune\nRoot-Is-Purelib: true\nTag: py3-none-any\n", 0o644))
    if meta.entry_points.strip():
        entries.append((f"{dist_info}/entry_points.txt", meta.entry_points.encode(), 0o644))
    entries.append((f"{dist_info}/top_level.txt", b"cloudtune\n", 0o644))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data, _ in entries) + f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode(), 0o644))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()


_BUILT: dict[str, tuple[str, bytes]] = {}


def wheel_bytes() -> tuple[str, bytes]:
    """(file name, bytes) of the wheel of the running cloudtune, built in memory once per source state."""
    digest, meta, files = source_hash()
    if digest not in _BUILT:
        _BUILT[digest] = (f"{meta.name}-{meta.version}-py3-none-any.whl", _build(meta, files))
    return _BUILT[digest]


def cloudtune_wheel(cache_dir: Path | None = None) -> Wheel:
    """The cached wheel of the running cloudtune (built on first use for this version + source)."""
    if cache_dir is None:
        cache_dir = cloudtune_home() / "wheels"
    digest, meta, files = source_hash()
    filename = f"{meta.name}-{meta.version}-py3-none-any.whl"
    target = Path(cache_dir) / f"{meta.version}-{digest[:16]}" / filename
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".wheel-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_build(meta, files))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Wheel(target, filename, meta.version, digest)
