"""Disk on the local launcher: each job's copy of its inputs is its own (copy-on-write where the file system can,
never a link: a job that writes into its input leaves the user's file as it was), and `cloudtune clean` removes
finished jobs' files, never a running job's."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.local.copies import FICLONE, CopyStats, clone_file, copy_tree

WRITER = """\
import os, pathlib
train = pathlib.Path(os.environ["CLOUDTUNE_INPUT_TRAIN"])
train = train if train.is_file() else next(train.iterdir())
with open(train, "a") as f:
    f.write("written by the job\\n")
assets = pathlib.Path(os.environ["CLOUDTUNE_INPUT_ASSETS"])
(assets / "vocab.txt").write_text("overwritten by the job")
(assets / "linked.txt").write_text("overwritten through the link")
report = {"train": str(train), "assets": str(assets),
          "links": [str(p) for p in assets.rglob("*") if p.is_symlink()]}
out = pathlib.Path(os.environ["CLOUDTUNE_MODEL_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "report.json").write_text(__import__("json").dumps(report))
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_a_job_writing_into_its_inputs_leaves_the_users_files_untouched(tmp_path: Path, home: Path, emulate: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/write.py").write_text(WRITER)
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n')
    assets = tmp_path / "assets"
    (assets / "sub").mkdir(parents=True)
    (assets / "vocab.txt").write_text("the user's vocab")
    (tmp_path / "outside.txt").write_text("a file the input links to")
    (assets / "linked.txt").symlink_to(tmp_path / "outside.txt")
    before = {p: p.read_bytes() for p in [tmp_path / "train.jsonl", assets / "vocab.txt", tmp_path / "outside.txt"]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "name": "writer", "command": "python write.py", "code": "src",
        "inputs": {"train": "train.jsonl", "assets": "assets"}, "providers": {"local": {"emulate": emulate}}}))
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    for path, content in before.items():
        assert path.read_bytes() == content, path
    report = json.loads((Path(job.model_uri) / "report.json").read_text())
    assert report["links"] == []  # the copy holds files, never links to the user's
    copy = Path(report["train"])
    assert copy.read_text().endswith("written by the job\n")
    assert os.stat(copy).st_ino != os.stat(tmp_path / "train.jsonl").st_ino and os.stat(copy).st_nlink == 1
    assert "bytes cloned copy-on-write" in "\n".join(job.logs())


def _reflink_dir(tmp_path: Path) -> Path | None:
    """A directory on a file system with copy-on-write clones: CLOUDTUNE_TEST_REFLINK_DIR, or tmp_path if it can."""
    for candidate in (os.environ.get("CLOUDTUNE_TEST_REFLINK_DIR"), str(tmp_path)):
        if not candidate:
            continue
        probe = Path(candidate) / f"probe-{os.getpid()}"
        probe.write_bytes(b"x")
        try:
            with open(probe, "rb") as src, open(f"{probe}.clone", "wb") as dst:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return Path(candidate)
        except OSError:
            continue
        finally:
            probe.unlink(missing_ok=True)
            Path(f"{probe}.clone").unlink(missing_ok=True)
    return None


def test_clone_file_is_an_independent_copy(tmp_path: Path) -> None:
    """Whatever the method the file system allows, the copy has the data and times of the source and is its own."""
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(300_000))
    os.utime(src, (1_000_000, 1_000_000))
    stats = CopyStats()
    method = clone_file(src, tmp_path / "copy.bin", stats)
    assert method in ("clone", "copy_file_range", "copy")
    copy = tmp_path / "copy.bin"
    assert copy.read_bytes() == src.read_bytes() and copy.stat().st_mtime == 1_000_000
    with open(copy, "r+b") as f:
        f.write(b"changed")
    assert src.read_bytes()[:7] != b"changed" and not copy.is_symlink() and src.stat().st_nlink == 1
    assert stats.cloned_bytes + stats.copied_bytes == 300_000


def test_clones_share_blocks_where_the_file_system_can(tmp_path: Path) -> None:
    base = _reflink_dir(tmp_path)
    if base is None:
        pytest.skip("no copy-on-write file system here (set CLOUDTUNE_TEST_REFLINK_DIR to a btrfs or XFS directory)")
    work = base / f"clone-test-{os.getpid()}"
    work.mkdir()
    try:
        (work / "model").mkdir()
        (work / "model/weights.bin").write_bytes(os.urandom(4 << 20))
        os.sync()
        st = os.statvfs(work)
        used_before = (st.f_blocks - st.f_bfree) * st.f_frsize
        stats = copy_tree(work / "model", work / "copy")
        os.sync()
        st = os.statvfs(work)
        assert stats.methods == {"clone"} and stats.cloned_bytes == 4 << 20
        assert (st.f_blocks - st.f_bfree) * st.f_frsize - used_before < 1 << 20  # 4 MiB copied, under 1 MiB used
        (work / "copy/weights.bin").write_bytes(b"job output")
        assert (work / "model/weights.bin").stat().st_size == 4 << 20
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env={**os.environ, "CLOUDTUNE_HOME": str(home)},
                          capture_output=True, text=True, timeout=120)


def test_clean_removes_finished_jobs_files_never_a_running_jobs(tmp_path: Path, home: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/run.sh").write_text(
        'cp -r "$CLOUDTUNE_INPUT_TRAIN" "$CLOUDTUNE_MODEL_DIR/train"\nif [ -n "$HOLD" ]; then echo $$ >> "$HOLD"; sleep 300; fi\n')
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n' * 50_000)
    pids = tmp_path / "pids.txt"
    spec = {"name": "clean", "command": "bash run.sh", "code": "src", "inputs": {"train": "train.jsonl"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    done = api.launch(tmp_path / "job.yaml")
    assert done.wait(timeout=60) == "succeeded"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**spec, "env": {"HOLD": str(pids)}}))
    running = api.launch(tmp_path / "job.yaml")
    try:
        deadline = time.monotonic() + 30
        while not (pids.exists() and pids.read_text().strip()):
            assert time.monotonic() < deadline, "the second job never started"
            time.sleep(0.1)
        running_files = sorted(p for p in (home / "jobs" / running.job_id).rglob("*"))

        assert _cli(home, "clean").returncode == 2  # say which jobs
        assert _cli(home, "clean", "--older-than", "soon").returncode == 2
        assert "0 job(s)" in _cli(home, "clean", "--older-than", "1d").stdout  # nothing ended a day ago
        skipped = _cli(home, "clean", running.job_id)
        assert skipped.returncode == 0 and "skipped (still running" in skipped.stdout
        res = _cli(home, "clean", "--all", "--json")
        assert res.returncode == 0, res.stderr
        assert [r["job_id"] for r in json.loads(res.stdout)] == [done.job_id]  # a running job is not finished

        assert sorted(p for p in (home / "jobs" / running.job_id).rglob("*")) == running_files
        left = {p.relative_to(home / "jobs" / done.job_id) for p in (home / "jobs" / done.job_id).rglob("*") if p.is_file()}
        assert {"state.json", "plan.json", "job.log", "cleaned.json"} <= {str(p) for p in left}
        assert not any("input" in str(p) for p in left)  # the input copy is gone
        assert (Path(done.model_uri) / "train/train.jsonl").is_file()  # the model stays
        assert json.loads(res.stdout)[0]["removed_bytes"] > 700_000
        assert _cli(home, "status", done.job_id).stdout.split("state:")[1].split()[0] == "succeeded"
        assert "running command" in _cli(home, "logs", done.job_id).stdout

        assert _cli(home, "clean", done.job_id, "--with-model").returncode == 0
        assert not Path(done.model_uri).exists()
    finally:
        running.cancel()
        running.wait(timeout=60)
        for pid in [int(p) for p in pids.read_text().split()] if pids.exists() else []:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
