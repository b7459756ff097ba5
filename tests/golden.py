"""Golden files: a test compares a value with its checked-in JSON file and fails when the file is missing.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest <the test file>. A missing
golden file is never written silently: the test fails and names the command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


def assert_golden(path: Path, got: Any) -> None:
    if os.environ.get("CLOUDTUNE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2) + "\n")
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; write it with CLOUDTUNE_UPDATE_GOLDEN=1 and review it")
    assert got == json.loads(path.read_text()), f"{path.name} differs; regenerate with CLOUDTUNE_UPDATE_GOLDEN=1 if intended"
