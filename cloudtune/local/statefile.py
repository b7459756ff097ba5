"""A local job's state file, `<job dir>/state.json`: the supervisor's record of the job (state, pids, attempt, exit),
read by the launcher, the sweep driver and `clean`. Written whole each time (a temp file, then a rename)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cloudtune.local import diskspace


def write_state(job_dir: Path, fresh: bool = False, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the job's state file (`fresh`: replace what it held), atomically: a temp file, then a
    rename. On a full disk the supervisor's reserve (cloudtune.local.diskspace) is freed and the write tried once
    more. Returns the state written."""
    path = job_dir / "state.json"
    state = {} if fresh else read_state(job_dir)
    state.update(fields, updated_at=time.time())
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    except OSError as exc:
        if not diskspace.is_full(exc):
            raise
        diskspace.release(job_dir)
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return state


def read_state(job_dir: Path) -> dict[str, Any]:
    """The job's state; {} when there is none (never submitted) or it cannot be parsed."""
    path = job_dir / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
