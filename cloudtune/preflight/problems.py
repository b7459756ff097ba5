"""What every preflight check reports with: the error listing the problems, the paths as the user typed them, and the
local inputs a check reads. A leaf of the package (its modules import it; it imports none of them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cloudtune.errors import InvalidInput
from cloudtune.spec import is_remote

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec


class PreflightError(InvalidInput):
    """One or more problems with a job's local inputs, each a line naming the file or field and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} problems with the job's inputs:\n" +
                             "\n".join(f"  {p}" for p in self.problems))


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` as the user would type it here: relative to the working directory when under it, else as is."""
    text = str(path)
    try:
        rel = Path(text).relative_to(Path.cwd())
    except ValueError:
        return text
    return rel.as_posix() if str(rel) != "." else text


def local_input(spec: "JobSpec", name: str | None) -> Path | None:
    """The local path of input `name` when it is a local path that exists; None otherwise."""
    uri = spec.inputs.get(name) if name else None
    return Path(uri) if uri is not None and not is_remote(uri) and Path(uri).exists() else None
