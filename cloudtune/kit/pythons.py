"""Finding an interpreter of a given Python version on this machine (pyenv's, else one on PATH).

Used by the lock generator (which must resolve a target's lock with the target's Python, so that pip evaluates
environment markers such as `python_version < "3.11"` for that Python) and by the local image runtime (which builds
the emulated image's virtual environment with it). Reads the file system only; imports nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloudtune.errors import InvalidInput


def find_python(version: str, why: str = "", fix: str = "") -> Path:
    """An interpreter of Python `version` (major.minor, "3.10"): pyenv's newest patch release under
    `$PYENV_ROOT/versions` (default ~/.pyenv), else `pythonX.Y` on PATH (pyenv's shims excluded: they may run
    another version). Raises InvalidInput naming the missing version; `why` says what needs it (": ..." appended to
    the message) and `fix` is added to the default fix (`pyenv install X.Y`)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = sorted((p for p in root.glob(f"{version}.*") if p.name.replace(".", "").isdigit()),
                   key=lambda p: [int(x) for x in p.name.split(".")], reverse=True) if root.is_dir() else []
    for base in found:
        exe = base / "bin" / f"python{version}"
        if exe.is_file():
            return exe
    on_path = shutil.which(f"python{version}")
    if on_path and ".pyenv/shims" not in on_path:
        return Path(on_path)
    raise InvalidInput(f"no Python {version} on this machine" + (f": {why}" if why else ""),
                       fix=f"install it (e.g. `pyenv install {version}`)" + (f", {fix}" if fix else ""))
