"""Staging: the files a plan names but does not write (the code bundle with cloudtune's wheel and, when large,
the runtime job) are described in the Plan by a recipe and built by `submit()`.

The build is deterministic, so the bytes staged at submit hash to what the plan printed; when they do not (the
code changed in between) the launch is refused instead of storing new bytes under the old hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput
from cloudtune.kit.bootstrap import load_lock, stage_wheelhouse
from cloudtune.kit.wheel import wheel_bytes
from cloudtune.plan import Upload

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.plan import Upload

CLOUDTUNE_DIR = ".cloudtune"  # where cloudtune's own files sit inside the code bundle
WHEEL = "cloudtune-wheel"


def _file_bytes(source: dict[str, str]) -> bytes:
    if "text" in source:
        return source["text"].encode()
    if source.get("kind") == WHEEL:
        return wheel_bytes()[1]
    raise InvalidInput(f"unknown staged file source {source!r}", fix="plan again with this version of cloudtune")


def cloudtune_files(with_wheel: bool, texts: dict[str, str]) -> dict[str, dict[str, str]]:
    """The recipe of cloudtune's own files in a bundle: its wheel (if asked) and `texts` (path -> content)."""
    files: dict[str, dict[str, str]] = {}
    if with_wheel:
        files[f"{CLOUDTUNE_DIR}/{wheel_bytes()[0]}"] = {"kind": WHEEL}
    files.update({path: {"text": text} for path, text in texts.items()})
    return files


def compose(user: "Bundle | None", files: dict[str, dict[str, str]]) -> "Bundle":
    """The code bundle (computed, not written): the user's bundle plus cloudtune's files."""
    from cloudtune.bundle import extend_bundle  # a command job's bundle only: off the dry run's start-up path

    extra = {path: _file_bytes(src) for path, src in files.items()}
    if user is None and not extra:
        raise InvalidInput("an empty code bundle was planned", fix="report this: a launcher planned nothing to carry")
    return extend_bundle(user, extra)


def recipe(user: "Bundle | None", files: dict[str, dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "code-bundle", "code": user.root if user is not None else None, "files": files}
    if user is not None and user.include:
        out["include"] = list(user.include)
    return out


def wheelhouse(target: str, home: Path, base_uri: str, lock_dir: Path | None = None) -> "Upload":
    """The planned upload of a stock-image target's wheelhouse (see `cloudtune.kit.bootstrap`): named and hashed
    from the lock alone, staged by submit() into `<home>/wheelhouses/`, stored under `<base_uri>/wheelhouses/<sha256>/`.
    `lock_dir` None = the locks shipped with cloudtune."""
    size, sha = load_lock(target, lock_dir).digest()
    recipe: dict[str, Any] = {"kind": "wheelhouse", "target": target}
    if lock_dir is not None:
        recipe["lock_dir"] = str(lock_dir)
    return Upload(str(home / "wheelhouses" / f"{target}-{sha[:16]}"), f"{base_uri}/wheelhouses/{sha}/", size, sha, recipe)


def _stage_wheelhouse(up: "Upload") -> None:
    build = up.build or {}
    lock = load_lock(build["target"], Path(build["lock_dir"]) if build.get("lock_dir") else None)
    if lock.digest()[1] != up.sha256:
        raise InvalidInput(f"the wheel lock {lock.target} changed since the plan was made",
                           fix="launch again: the new plan carries the new hash")
    out = Path(up.source)
    stage_wheelhouse(lock, out, out.parent.parent / "wheels")


def stage(up: "Upload") -> None:
    """Build `up.source` from its recipe if it is not there yet, checking the bytes against the planned hash."""
    from cloudtune.bundle import build_bundle  # a command job's bundle only: off the dry run's start-up path

    if up.build is None:
        return
    if up.build.get("kind") == "wheelhouse":
        return _stage_wheelhouse(up)
    if Path(up.source).is_file():
        return
    code = up.build.get("code")
    user = build_bundle(code, include=tuple(up.build.get("include") or ())) if code else None
    bundle = compose(user, up.build.get("files") or {})
    if bundle.sha256 != up.sha256:
        raise InvalidInput(f"the code bundle changed since the plan was made (sha256 {up.sha256[:12]} planned, "
                           f"{bundle.sha256[:12]} now)", fix="launch again: the new plan carries the new hash")
    bundle.write(Path(up.source).parent)
