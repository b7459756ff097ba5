"""Remove the files of finished local jobs: their copies of the inputs, code and checkpoints (and, if asked,
their models). A job's record stays: `state.json`, `plan.json` and its logs are kept, so `list`, `status` and
`logs` still answer for it. A job that may still run is never touched."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput
from cloudtune.local.proctree import job_processes
from cloudtune.local.starting import LOCK_NAME, locked
from cloudtune.local.statefile import read_state
from cloudtune.states import TERMINAL
from cloudtune.store import JobStore
from cloudtune.units import parse_duration

if TYPE_CHECKING:
    from cloudtune.store import JobRecord, JobStore

KEPT = frozenset({"state.json", "plan.json", "job.log", "supervisor.log", "cleaned.json", LOCK_NAME})


@dataclass
class Cleaned:
    """What cleaning one job did (or, in a dry run, would do)."""

    job_dir: Path
    removed_bytes: int = 0
    skipped: str | None = None  # why nothing was removed


def _supervisor_alive(pid: object) -> bool:
    """Whether `pid` is a running local supervisor (a reused pid of another program does not count)."""
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()  # type: ignore[arg-type]
        stat = Path(f"/proc/{int(pid)}/stat").read_text()  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return False
    return b"cloudtune.local.supervisor" in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def still_running(job_dir: Path) -> str | None:
    """Why `job_dir` must not be cleaned now, or None when nothing of the job runs."""
    state = read_state(job_dir)
    if _supervisor_alive(state.get("supervisor_pid")):
        return f"still {state.get('state', 'running')} (supervisor pid {state['supervisor_pid']})"
    if state.get("state") not in TERMINAL:
        if not state and not (job_dir / "plan.json").exists():
            return "not a job directory"
        if time.time() - float(state.get("updated_at", 0)) < 60 and "supervisor_pid" not in state:
            return "starting"
    if (job_dir / LOCK_NAME).exists():
        with locked(job_dir) as held:
            if held is None:  # a launch or a supervisor holds it (cloudtune.local.starting)
                return "starting"
    pids = job_processes(job_dir)
    return f"process {pids[0]} still runs in it" if pids else None


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                pass
    return total


def _removable(job_dir: Path, keep: Path | None) -> list[Path]:
    """The entries to remove: everything but the record files and (when kept) the parents of the model dir."""
    out: list[Path] = []
    todo = [p for p in job_dir.iterdir() if p.name not in KEPT]
    while todo:
        path = todo.pop()
        if keep is not None and path.is_dir() and not path.is_symlink() and keep.is_relative_to(path):
            if path != keep:
                todo.extend(path.iterdir())
            continue
        out.append(path)
    return out


def clean_job(job_dir: Path, job_name: str, *, keep_model: Path | None = None, dry_run: bool = False) -> Cleaned:
    """Remove a finished job's files (see the module docstring); the model dir `keep_model` stays when given."""
    result = Cleaned(job_dir)
    if not job_dir.is_dir():
        result.skipped = "no files on this machine"
        return result
    why = still_running(job_dir)
    if why:
        result.skipped = why
        return result
    legacy = Path(tempfile.gettempdir()) / "cloudtune-code" / job_name  # world-readable copies of older versions
    targets = _removable(job_dir, keep_model.resolve() if keep_model else None)
    targets += [legacy] if legacy.is_dir() and not legacy.is_symlink() else []
    targets += sorted(Path(tempfile.gettempdir()).glob(f"cloudtune-code-{job_name}-*"))[:1000]
    for path in targets:
        result.removed_bytes += _size(path)
        if not dry_run:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    if not dry_run:
        (job_dir / "cleaned.json").write_text(
            f'{{"cleaned_at": {time.time()}, "removed_bytes": {result.removed_bytes}, "model_kept": {str(keep_model is not None).lower()}}}\n')
    return result


def ended_at(job_dir: Path) -> float | None:
    """When the job ended, from its state file (None if it has not)."""
    state = read_state(job_dir)
    value = state.get("ended_at") if state.get("state") in TERMINAL else None
    return float(value) if value is not None else None


def clean_jobs(job_ids: list[str], *, older_than: str | None = None, all_: bool = False, with_model: bool = False,
               dry_run: bool = False, store: "JobStore | None" = None) -> list[dict[str, Any]]:
    """Clean the local jobs named (exact id or unique prefix), or every finished one that ended `older_than` ago
    (a duration: 7d, 12h) or, with `all_`, every finished one. Returns one dict per job: job_id, job_dir,
    removed_bytes, skipped (why nothing was removed, or None).

    Raises InvalidInput when no job is selected or a named job is not a local one; JobNotFound for an unknown id."""
    if not job_ids and older_than is None and not all_:
        raise InvalidInput("say which jobs to clean", fix="give job ids, --older-than 7d or --all (`cloudtune list` shows them)")
    if job_ids and (older_than is not None or all_):
        raise InvalidInput("give job ids, or --older-than/--all, not both", fix="run it once for each")
    store = store or JobStore()
    if job_ids:
        records = [store.get(job_id) for job_id in job_ids]
        remote = [r.job_id for r in records if r.provider != "local"]
        if remote:
            raise InvalidInput(f"not local jobs: {', '.join(remote)}; their files are on their cloud",
                               fix="name local jobs only (`cloudtune list --provider local`)")
    else:
        cutoff = time.time() - _seconds(older_than) if older_than is not None else None
        records = [r for r in store.list(limit=0, provider="local")
                   if (end := ended_at(_job_dir(r))) is not None and (cutoff is None or end <= cutoff)]
    results = []
    for record in records:
        job_dir = _job_dir(record)
        keep = None if with_model or not record.model_uri else Path(record.model_uri)
        done = clean_job(job_dir, record.job_id, keep_model=keep, dry_run=dry_run)
        results.append({"job_id": record.job_id, "job_dir": str(job_dir), "removed_bytes": done.removed_bytes,
                        "skipped": done.skipped})
    return results


def _job_dir(record: "JobRecord") -> Path:
    return Path(record.job_dir or record.native_id or "")


def _seconds(duration: str) -> int:
    try:
        return parse_duration(duration)
    except ValueError as exc:
        raise InvalidInput(f"--older-than {duration}: {exc}", fix="e.g. --older-than 7d, 12h or 90m") from None
