"""A job's outcome tells the truth: a command that leaves the model dir empty is warned about (log and summary),
under every emulated cloud; a detached job's failure reason reaches the job store and `status --json`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudtune import api
from cloudtune.cli import main
from cloudtune.local.statefile import read_state
from cloudtune.store import JobStore

WRONG_DIR = """\
import os, json
os.makedirs("outputs/final", exist_ok=True)   # the HF Trainer's output_dir habit, not $CLOUDTUNE_MODEL_DIR
json.dump({"weights": [1, 2, 3]}, open("outputs/final/model.json", "w"))
"""
RIGHT_DIR = """\
import os, pathlib
pathlib.Path(os.environ["CLOUDTUNE_MODEL_DIR"], "model.json").write_text("{}")
"""
EMPTY_WARNING = "nothing was written to the model dir"


def project(tmp: Path, script: str, name: str = "cmd") -> Path:
    (tmp / "src").mkdir(parents=True, exist_ok=True)
    (tmp / "src/train.py").write_text(script)
    spec = tmp / f"{name}.yaml"
    spec.write_text(f"name: {name}\ncommand: python train.py\ncode: src\n")
    return spec


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_command_with_an_empty_model_dir_is_warned_about(tmp_path: Path, emulate: str) -> None:
    spec = project(tmp_path, WRONG_DIR)
    result = CliRunner().invoke(main, ["launch", str(spec), "--set", f"providers.local.emulate={emulate}"])
    assert result.exit_code == 0, result.output
    log_warnings = [ln for ln in result.output.splitlines() if ln.startswith("[cloudtune] warning: " + EMPTY_WARNING)]
    summary_warnings = [ln for ln in result.output.splitlines() if ln.startswith("warning: " + EMPTY_WARNING)]
    assert len(log_warnings) == 1 and len(summary_warnings) == 1, result.output
    assert "state:  succeeded" in result.output


def test_command_that_writes_its_model_gets_no_warning(tmp_path: Path) -> None:
    job = api.launch(project(tmp_path, RIGHT_DIR))
    assert job.wait(timeout=120) == "succeeded"
    assert job.info()["warnings"] == [] and EMPTY_WARNING not in "\n".join(job.logs())


def test_detached_failure_reason_reaches_the_store(tmp_path: Path, home: Path) -> None:
    spec = project(tmp_path, "import sys; print('about to fail'); sys.exit(3)\n", name="fails")
    result = CliRunner().invoke(main, ["launch", str(spec), "--detach", "--json"])
    job_id = json.loads(result.stdout)["job_id"]  # stderr carries the plan's warnings
    job_dir = Path(JobStore().get(job_id).job_dir)
    deadline = time.monotonic() + 120
    while read_state(job_dir).get("state") not in ("failed", "succeeded") and time.monotonic() < deadline:
        time.sleep(0.2)  # wait on the job dir only: nothing reads the job's status before the supervisor ends it
    while JobStore().get(job_id).state not in ("failed", "succeeded") and time.monotonic() < deadline:
        time.sleep(0.2)  # the supervisor writes the store right after the state file
    assert JobStore().get(job_id).state == "failed"
    status = CliRunner().invoke(main, ["status", job_id, "--json"])
    info = json.loads(status.output)
    assert info["state"] == "failed" and info["failure_reason"].startswith("AlgorithmError: exit code 3")
    assert JobStore().get(job_id).extra["failure_reason"] == info["failure_reason"]
    listed = json.loads(CliRunner().invoke(main, ["list", "--json"]).output)
    assert [r["state"] for r in listed if r["job_id"] == job_id] == ["failed"]
