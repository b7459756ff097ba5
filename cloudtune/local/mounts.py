"""Bucket-mount semantics for the local emulation: a directory rename under an emulated mount fails, as on the cloud.

On Vertex AI the job writes its model, checkpoints and logs under `/gcs/<bucket>/...`, a Cloud Storage FUSE mount;
gcsfuse refuses to rename a directory unless it was mounted with `--rename-dir-limit` ("Renaming directories is by
default not supported", GoogleCloudPlatform/gcsfuse docs/semantics.md). On Azure ML the outputs are `rw_mount`s
(blobfuse): "Directory renames recursively enumerate all files in the directory and rename each file individually",
a file rename being a copy then a delete (learn.microsoft.com/azure/storage/blobs/blobfuse2-compare-linux-file-system):
it may succeed, but it is not atomic, so code that relies on it to commit must not pass locally either.

The local layout names the mount roots in `MOUNTS_VAR` (os.pathsep-separated absolute paths) for `emulate: gcp` and
`emulate: azure`; the supervisor then puts `HOOK_DIR` first on the job processes' PYTHONPATH (`with_hook`). Python
imports `sitecustomize` from there at start-up (every process of the job: `cloudtune-run`, torchrun's workers, a user's
`python` command), which calls `install`: from then on `os.rename`/`os.replace` (and `Path.rename`/`Path.replace`,
which call them) of a DIRECTORY whose source or destination is under a root raise OSError(ENOTSUP) naming the mount.
File renames work, as they do on both drivers. `shutil.move` of a directory then falls back to copy-and-delete, which
is exactly what it does on the real mounts. Renames done in C (not through Python's os module) are not seen.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable

MOUNTS_VAR = "CLOUDTUNE_EMULATED_MOUNTS"
DRIVER_VAR = "CLOUDTUNE_EMULATED_MOUNT_DRIVER"  # "gcsfuse" or "blobfuse": named in the error
HOOK_DIR = str(Path(__file__).resolve().parent / "mounthook")  # holds sitecustomize.py
DRIVERS = {"gcp": "gcsfuse", "azure": "blobfuse"}
_FIXES = {
    "gcsfuse": "Cloud Storage FUSE (/gcs on Vertex AI) refuses directory renames unless mounted with "
               "--rename-dir-limit",
    "blobfuse": "blobfuse (Azure ML rw_mount outputs) renames a directory file by file, copy then delete: not atomic",
}

_installed: dict[str, Any] = {}


def _under(path: Any, roots: tuple[str, ...]) -> bool:
    try:
        full = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(full == r or full.startswith(r + os.sep) for r in roots)


def _guard(original: Callable[..., Any], roots: tuple[str, ...], driver: str) -> Callable[..., Any]:
    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        relative = args or kwargs.get("src_dir_fd") is not None or kwargs.get("dst_dir_fd") is not None
        if not relative and (_under(src, roots) or _under(dst, roots)) and os.path.isdir(src):
            raise OSError(errno.ENOTSUP, f"{os.strerror(errno.ENOTSUP)}: directory rename on an emulated {driver} "
                                         f"mount ({_FIXES.get(driver, driver)}); write files under their final names "
                                         f"instead", os.fsdecode(src), None, os.fsdecode(dst))
        return original(src, dst, *args, **kwargs)

    rename.__wrapped__ = original  # type: ignore[attr-defined]
    return rename


def install(roots: list[str], driver: str) -> None:
    """From now on, in this process, refuse directory renames under `roots` (absolute paths) as `driver` does.
    Installing again replaces the roots; `uninstall` restores os.rename and os.replace."""
    uninstall()
    resolved = tuple(os.path.realpath(r) for r in roots if r)
    if not resolved:
        return
    _installed.update(rename=os.rename, replace=os.replace)
    os.rename = _guard(os.rename, resolved, driver)  # type: ignore[assignment]
    os.replace = _guard(os.replace, resolved, driver)  # type: ignore[assignment]


def uninstall() -> None:
    if _installed:
        os.rename, os.replace = _installed.pop("rename"), _installed.pop("replace")  # type: ignore[assignment]


def install_from_env(environ: dict[str, str] | None = None) -> None:
    """What the start-up hook runs: install for the roots in MOUNTS_VAR, if any."""
    env = os.environ if environ is None else environ
    roots = [r for r in env.get(MOUNTS_VAR, "").split(os.pathsep) if r]
    if roots:
        install(roots, env.get(DRIVER_VAR, "gcsfuse"))


def node_env(emulate: str, roots: list[str]) -> dict[str, str]:
    """The variables a node of an `emulate` layout gets so that its processes see mount semantics under `roots`
    (empty for a cloud whose job storage is a plain disk: SageMaker's /opt/ml)."""
    if emulate not in DRIVERS or not roots:
        return {}
    return {MOUNTS_VAR: os.pathsep.join(roots), DRIVER_VAR: DRIVERS[emulate]}


def with_hook(env: dict[str, str]) -> dict[str, str]:
    """`env` (a job process's environment) with HOOK_DIR first on PYTHONPATH when it names emulated mounts."""
    if not env.get(MOUNTS_VAR):
        return env
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (HOOK_DIR, env.get("PYTHONPATH", "")) if p)}
