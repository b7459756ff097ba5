"""A full disk under a local job ends it with one line that names the disk, the free bytes and the fix, is not
retried (the same disk fills again), and leaves a job store that the CLI still reads.

Two ways to fill it: a file-size limit (RLIMIT_FSIZE, `ulimit -f`, set in the CLI process that launches the job and
inherited by its supervisor and workers: PyTorch's zip writer then fails with "inline_container.cc"), and a small
tmpfs holding CLOUDTUNE_HOME itself (where mounting is allowed: root), so the job store's disk is full too."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from tests.distributed.helpers import wait_for

pytestmark = pytest.mark.slow
FSIZE_LIMIT = 300 * 1024  # above every input and log file of the tiny job, below its optimizer.pt (~360 KB)


def _cli(*args: str, env: dict[str, str], fsize: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CLOUDTUNE_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}


def test_a_file_size_limit_names_the_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from tests.tiny_models import make_tiny_gpt2

    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    model = make_tiny_gpt2(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"line {i} of text"}) + "\n" for i in range(16)))
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fsize", "inputs": {"train": str(tmp_path / "train.jsonl")}, "retries": 2,
        "train": {"model": str(model), "data": {"train": "train", "eval": None},
                  "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_seq_len": 16}},
        "checkpoint": {"every_steps": 2}}))
    out = _cli("launch", str(spec), "--detach", "--json", env=_env(home), fsize=FSIZE_LIMIT)
    assert out.returncode == 0, out.stderr
    job = api.get_job(json.loads(out.stdout)["job_id"])
    assert job.wait(timeout=300) == "failed", "\n".join(job.logs())
    reason = job.info()["failure_reason"]
    print("file-size limit outcome:", reason)
    assert reason.startswith(f"DiskFull: file-size limit (ulimit -f) of {FSIZE_LIMIT} bytes reached on /")
    assert " bytes free (" in reason
    assert "inline_container.cc" in reason or "File too large" in reason
    assert "; to fix: free space" in reason and reason.endswith("[exit class: error, not retried]")
    assert "restarting" not in "\n".join(job.logs())

    status = _cli("status", job.job_id, env=_env(home))
    assert status.returncode == 0, status.stderr
    assert "file-size limit (ulimit -f)" in status.stdout and "Traceback" not in status.stdout + status.stderr


def _fill(path: Path) -> None:
    """Write `path` until the disk is full (bounded: the tmpfs is 6 MiB)."""
    with open(path, "wb", buffering=0) as fh:
        for _ in range(64 * 1024):
            try:
                fh.write(b"\0" * 4096)
            except OSError:
                return
    raise AssertionError("the disk did not fill up")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MiB tmpfs, unmounted at the end; skipped where mounting is not allowed."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_disk_ends_the_job_with_one_line_and_the_store_still_reads(small_disk: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    home = small_disk / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    src = small_disk.parent / "src"
    src.mkdir()
    spec = small_disk.parent / "job.yaml"
    # the job writes until the disk is full: `head` says "No space left on device" and exits 1
    spec.write_text(yaml.safe_dump({"name": "full", "code": str(src), "retries": 1,
                                    "command": 'head -c 64M /dev/zero > "$CLOUDTUNE_MODEL_DIR/big"'}))
    out = _cli("launch", str(spec), "--detach", "--json", env=_env(home))
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]
    state_file = home / "jobs" / job_id / "state.json"
    wait_for(lambda: json.loads(state_file.read_text()).get("state") == "failed", 120, "the job to fail")
    _fill(small_disk / "filler")  # now nothing more fits: the store cannot record what `status` reads

    status = _cli("status", job_id, env=_env(home))
    print("full disk status:", status.stdout, status.stderr)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"disk full on {small_disk}" in status.stdout and "bytes free" in status.stdout
    assert "Traceback" not in status.stdout + status.stderr and "report it" not in status.stdout + status.stderr
    assert "cannot be written" in status.stderr  # said once, as a warning
    listed = _cli("list", env=_env(home))
    assert listed.returncode == 0 and job_id in listed.stdout, listed.stdout + listed.stderr
    state = json.loads((home / "jobs" / job_id / "state.json").read_text())
    assert state["state"] == "failed" and state["failure_reason"].startswith(f"DiskFull: disk full on {small_disk}")
    assert "restarting" not in (home / "jobs" / job_id / "job.log").read_text()


def test_a_store_on_a_full_disk_reads_and_says_why_it_cannot_write(small_disk: Path) -> None:
    import time

    from cloudtune.store import JobRecord, JobStore, StoreNotWritable

    home = small_disk / "home"
    now = time.time()
    JobStore(home).add(JobRecord("j1", "local", "n", "running", now, now))
    _fill(small_disk / "filler")
    store = JobStore(home)  # a reader in WAL mode needs a -shm file, which the full disk refuses: opened read-only
    assert store.get("j1").state == "running" and [r.job_id for r in store.list()] == ["j1"]
    shown = store.record_status("j1", "failed", failure_reason="x")  # what the provider says is still returned
    assert shown.state == "failed" and shown.extra["failure_reason"] == "x"
    with pytest.raises(StoreNotWritable, match="cannot be written") as raised:
        store.add(JobRecord("j2", "local", "n", "running", now, now))
    assert "To fix: free space" in str(raised.value)
    (small_disk / "filler").unlink()
    assert JobStore(home).get("j1").state == "running"  # nothing was lost, nothing half-written
