"""`command` jobs on the local launcher: the user's script sees the neutral contract under every emulated
cloud; failures are reported; secrets reach the process and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune import api

SCRIPT = """\
import json, os, pathlib, sys
md = pathlib.Path(os.environ["CLOUDTUNE_MODEL_DIR"])
md.mkdir(parents=True, exist_ok=True)
seen = {k: v for k, v in os.environ.items() if k.startswith("CLOUDTUNE_") or k in ("PLAIN", "API_TOKEN")}
seen["helper"] = pathlib.Path("helper.txt").read_text()
seen["dotenv_present"] = pathlib.Path(".env").exists()
(md / "seen.json").write_text(json.dumps(seen))
print("hello from the job")
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

SECRET_VALUE = "s3cr3t-value-123"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    (src / "helper.txt").write_text("bundled")
    (src / ".env").write_text(f"API_TOKEN={SECRET_VALUE}\n")
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "job.yaml").write_text(
        "name: cmd\n"
        "inputs: {train: train.jsonl}\n"
        "command: python train.py\n"
        "code: src\n"
        "env: {PLAIN: plain-value}\n"
        "secrets: {API_TOKEN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tok'}\n"
    )
    return tmp_path


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_command_sees_contract(project: Path, emulate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", SECRET_VALUE)
    job = api.launch(project / "job.yaml", providers__local__emulate=emulate)
    assert job.wait(timeout=120) == "succeeded", "\n".join(job.logs())
    seen = json.loads((Path(job.model_uri) / "seen.json").read_text())
    assert seen["CLOUDTUNE_PROVIDER"] == emulate
    assert seen["PLAIN"] == "plain-value"
    assert seen["API_TOKEN"] == SECRET_VALUE  # resolved into the process environment only
    assert seen["helper"] == "bundled" and seen["dotenv_present"] is False  # .env never bundled
    train = Path(seen["CLOUDTUNE_INPUT_TRAIN"])
    assert train.exists() and str(train).startswith(str(project / "home" / "jobs"))
    assert "hello from the job" in "\n".join(job.logs())
    # the secret value is nowhere on disk but in the process' own output file
    home = project / "home"
    for path in home.rglob("*"):
        if path.is_file() and path.name != "seen.json" and path.suffix != ".gz":
            assert SECRET_VALUE not in path.read_text(errors="ignore"), path
    assert SECRET_VALUE.encode() not in (home / "jobs.db").read_bytes()


def test_failing_command_fails_the_job(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", SECRET_VALUE)
    env = dict(os.environ)
    res = subprocess.run(
        [sys.executable, "-m", "cloudtune.cli", "launch", str(project / "job.yaml"), "--json", "--set", "env.EXIT_WITH=3"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 1, res.stderr
    info = json.loads(res.stdout)
    assert info["state"] == "failed" and "exit code 3" in info["failure_reason"]


def test_missing_secret_is_refused_before_anything_runs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    from cloudtune.errors import UnsupportedSpec

    with pytest.raises(UnsupportedSpec, match="API_TOKEN"):
        api.launch(project / "job.yaml")
    assert api.list_jobs() == []
