"""cloudtune.store: CRUD, id prefixes, ordering, update rules, and concurrent writers in separate processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest

from cloudtune.errors import JobNotFound
from cloudtune.states import TERMINAL, JobState
from cloudtune.store import SCHEMA_VERSION, JobRecord, JobStore


def rec(job_id: str, provider: str = "local", created_at: float | None = None, **kw: object) -> JobRecord:
    t = time.time() if created_at is None else created_at
    return JobRecord(job_id=job_id, provider=provider, name=f"name-{job_id}", state="pending",
                     created_at=t, updated_at=t, **kw)  # type: ignore[arg-type]


def test_constants() -> None:
    assert tuple(JobState) == ("pending", "running", "succeeded", "failed", "cancelled")
    assert TERMINAL == frozenset({"succeeded", "failed", "cancelled"})


def test_records_carry_the_state_enum_and_store_its_value(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("a"))
    got = store.record_status("a", "running")
    assert got.state is JobState.RUNNING and store.get("a").state is JobState.RUNNING
    assert got.to_dict()["state"] == "running" and type(got.to_dict()["state"]) is str
    assert f"{got.state}" == str(got.state) == "running"  # printed as its value, never JobState.RUNNING
    with pytest.raises(ValueError):
        JobRecord(job_id="b", provider="local", name="b", state="finished", created_at=0.0, updated_at=0.0)


def test_home_and_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "h"))
    store = JobStore()
    assert store.path == tmp_path / "h" / "jobs.db" and store.path.exists()
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    JobStore(tmp_path / "h")  # reopening an existing DB is fine


def test_add_get_roundtrip(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    r = rec("local-abc123", native_id="n1", model_uri="file:///m", console_url=None, job_dir="/j",
            spec_path="job.yaml", plan={"a": [1, 2], "b": {"c": None}}, extra={"k": "v"})
    store.add(r)
    got = store.get("local-abc123")
    assert got == r
    assert got.to_dict()["plan"] == {"a": [1, 2], "b": {"c": None}}
    import json
    json.dumps(got.to_dict())
    with pytest.raises(sqlite3.IntegrityError):
        store.add(r)


def test_prefix_and_ambiguous(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("sm-aaa111"))
    store.add(rec("sm-aab222"))
    store.add(rec("sm"))
    assert store.get("sm-aaa").job_id == "sm-aaa111"
    assert store.get("sm").job_id == "sm"  # exact match wins over prefix
    with pytest.raises(JobNotFound) as exc:
        store.get("sm-aa")
    assert "sm-aaa111" in exc.value.message and "sm-aab222" in exc.value.message
    with pytest.raises(JobNotFound) as exc2:
        store.get("zzz")
    assert exc2.value.fix == "run `cloudtune list` to see job ids"
    with pytest.raises(JobNotFound):
        store.get("SM-AAA")  # case-sensitive
    with pytest.raises(JobNotFound):
        store.get("")


def test_list_order_and_filter(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("j1", created_at=100.0))
    store.add(rec("j3", provider="aws", created_at=300.0))
    store.add(rec("j2", created_at=200.0))
    assert [r.job_id for r in store.list()] == ["j3", "j2", "j1"]
    assert [r.job_id for r in store.list(limit=2)] == ["j3", "j2"]
    assert [r.job_id for r in store.list(provider="local")] == ["j2", "j1"]
    assert store.list(provider="gcp") == []


def test_update(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("j1", created_at=100.0))
    new = store.update("j1", state="running", extra={"x": 1}, model_uri="s3://m")
    assert new.state == "running" and new.extra == {"x": 1} and new.model_uri == "s3://m"
    assert new.updated_at > 100.0 and new.created_at == 100.0
    assert store.get("j1") == new
    with pytest.raises(TypeError):
        store.update("j1", bogus=1)
    with pytest.raises(TypeError):
        store.update("j1", job_id="other")
    assert store.get("j1") == new
    with pytest.raises(JobNotFound):
        store.update("nope", state="failed")


def _worker(home: str, worker: int, n: int) -> None:
    store = JobStore(Path(home))
    for i in range(n):
        job_id = f"w{worker}-{i:03d}"
        store.add(rec(job_id))
        store.update(job_id, state="running", extra={"i": i})
    for i in range(0, n, 5):
        store.update(f"w{worker}-{i:03d}", state="succeeded")


def test_concurrent_processes(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = JobStore(tmp_path).list(limit=0)
    assert len(rows) == 100
    assert {r.job_id for r in rows} == {f"w{w}-{i:03d}" for w in range(2) for i in range(50)}
    by_id = {r.job_id: r for r in rows}
    for w in range(2):
        for i in range(50):
            r = by_id[f"w{w}-{i:03d}"]
            assert r.extra == {"i": i}
            assert r.state == ("succeeded" if i % 5 == 0 else "running")


# ------------------------------------------------------------------------------ terminal states stay terminal
def test_terminal_state_is_never_replaced_by_a_non_terminal_one(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("j1"))
    store.update("j1", state="running")
    store.update("j1", state="failed", extra={"failure_reason": "AlgorithmError: exit code 3"})
    stale = store.update("j1", state="running", console_url="https://c")  # a stale reader writing back
    assert stale.state == "failed" and stale.console_url == "https://c"
    assert store.record_status("j1", "pending").state == "failed"
    assert store.get("j1").extra == {"failure_reason": "AlgorithmError: exit code 3"}
    assert store.update("j1", state="cancelled").state == "cancelled"  # one final state may correct another


def test_record_status_merges_extra_keys(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(rec("j1", extra={"job_dir_hint": "x"}))
    store.record_status("j1", "running", attempt=1)
    got = store.record_status("j1", "failed", failure_reason="boom")
    assert got.extra == {"job_dir_hint": "x", "attempt": 1, "failure_reason": "boom"} and got.state == "failed"


def _stale_lister(home: str, n: int) -> None:
    store = JobStore(Path(home))
    for i in range(n):  # what a `cloudtune list` with a stale provider view writes, over and over
        store.record_status(f"job-{i % 10}", "running", seen=i)
        store.update(f"job-{i % 10}", state="pending")


def _finisher(home: str) -> None:
    store = JobStore(Path(home))
    for j in range(10):
        time.sleep(0.01)
        store.update(f"job-{j}", state="failed" if j % 2 else "succeeded")
        store.record_status(f"job-{j}", "failed" if j % 2 else "succeeded", failure_reason=f"reason {j}")


def test_concurrent_stale_writers_never_reopen_a_finished_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    for j in range(10):
        store.add(rec(f"job-{j}"))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_stale_lister, args=(str(tmp_path), 300)) for _ in range(2)]
    procs.append(ctx.Process(target=_finisher, args=(str(tmp_path),)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    _stale_lister(str(tmp_path), 20)  # and once more after every job ended
    for j in range(10):
        r = store.get(f"job-{j}")
        assert r.state == ("failed" if j % 2 else "succeeded")
        assert r.extra["failure_reason"] == f"reason {j}" and "seen" in r.extra
