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


def _dump(path: Path, value: Any) -> str:
    if path.suffix in (".yml", ".yaml"):  # a job YAML, as `az ml job create --file` reads it
        import yaml

        return yaml.safe_dump(value, sort_keys=False, width=120)
    return json.dumps(value, indent=2) + "\n"


def _load(path: Path) -> Any:
    if path.suffix in (".yml", ".yaml"):
        import yaml

        return yaml.safe_load(path.read_text())
    return json.loads(path.read_text())


def assert_golden(path: Path, got: Any) -> None:
    """`got` equals the golden file (JSON, or YAML for a .yml/.yaml path)."""
    if os.environ.get("CLOUDTUNE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(path, got))
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; write it with CLOUDTUNE_UPDATE_GOLDEN=1 and review it")
    assert got == _load(path), f"{path.name} differs; regenerate with CLOUDTUNE_UPDATE_GOLDEN=1 if intended"
