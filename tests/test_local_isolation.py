"""Two local jobs on one machine stay apart: single-node jobs with several processes never meet on torchrun's
default port (Azure ML's contract sets no MASTER_PORT on one node), and a relative `providers.local.jobs_dir`
is the spec's own directory's, not the caller's working directory's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cloudtune import api

WORKER = """\
import os, time
print(f"worker rank={os.environ['RANK']} port={os.environ['MASTER_PORT']}", flush=True)
time.sleep(3)  # both jobs' rendezvous are up at the same time
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("emulate", ["azure", "aws"])
def test_two_single_node_multi_process_jobs_at_once(tmp_path: Path, home: Path, emulate: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/worker.py").write_text(WORKER)
    spec = {"name": "ports", "command": "python worker.py", "code": "src",
            "resources": {"processes_per_node": 2}, "providers": {"local": {"emulate": emulate}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    jobs = [api.launch(tmp_path / "job.yaml") for _ in range(2)]
    ports = []
    for job in jobs:
        assert job.wait(timeout=120) == "succeeded", "\n".join(job.logs())
        seen = {line.split("port=")[1] for line in job.logs() if line.startswith("worker rank=")}
        assert len(seen) == 1
        ports += seen
    assert len(set(ports)) == 2


def test_relative_jobs_dir_is_the_specs(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src/run.sh").write_text("true\n")
    (project / "job.yaml").write_text(yaml.safe_dump({
        "name": "where", "command": "bash run.sh", "code": "src", "providers": {"local": {"jobs_dir": "runs"}}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    job = api.launch(Path("..") / "project" / "job.yaml")
    assert job.wait(timeout=60) == "succeeded"
    assert (project / "runs" / job.job_id / "state.json").is_file()
    assert not (elsewhere / "runs").exists() and os.listdir(elsewhere) == []
