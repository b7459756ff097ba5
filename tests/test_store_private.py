"""The job store and the local jobs are the user's alone: $CLOUDTUNE_HOME 0700, jobs.db and its -wal/-shm 0600,
a local job's dir 0700 and its files 0600 (as the cloud CLIs keep their credential and cache dirs); a wider home or
database that already exists is tightened."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.store import JobRecord, JobStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _record(job_id: str) -> JobRecord:
    now = time.time()
    return JobRecord(job_id=job_id, provider="local", name="n", state="running", created_at=now, updated_at=now)


def test_a_new_store_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask: what it alone would give is 0755 / 0644
    try:
        home = tmp_path / "a" / "home"
        store = JobStore(home)
        reader = sqlite3.connect(home / "jobs.db")  # held open: SQLite keeps the -wal and -shm files while it is
        try:
            reader.execute("SELECT count(*) FROM jobs").fetchone()
            store.add(_record("j1"))
            store.update("j1", state="succeeded")
            files = {n: _mode(home / n) for n in ("jobs.db", "jobs.db-wal", "jobs.db-shm")}
        finally:
            reader.close()
    finally:
        os.umask(old)
    assert _mode(home) == 0o700
    assert files == {"jobs.db": 0o600, "jobs.db-wal": 0o600, "jobs.db-shm": 0o600}


def test_a_wider_store_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    JobStore(home).add(_record("j1"))
    os.chmod(home, 0o755)
    for f in home.iterdir():
        os.chmod(f, 0o644)
    store = JobStore(home)
    assert store.get("j1").job_id == "j1"
    assert _mode(home) == 0o700
    assert {f.name: _mode(f) for f in home.iterdir()} == {f.name: 0o600 for f in home.iterdir()}


def test_a_local_job_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    src = tmp_path / "src"
    src.mkdir()
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "perm", "command": "echo hello > $CLOUDTUNE_MODEL_DIR/out.txt",
                                    "code": "src"}))
    job = api.launch(spec)
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    job_dir = tmp_path / "home" / "jobs" / job.job_id
    assert _mode(tmp_path / "home") == 0o700 and _mode(job_dir) == 0o700
    for name in ("job.log", "state.json", "plan.json", "supervisor.log"):
        assert _mode(job_dir / name) == 0o600, name
    out = Path(job.model_uri) / "out.txt"
    assert _mode(out) == 0o600 and _mode(Path(job.model_uri)) == 0o700
