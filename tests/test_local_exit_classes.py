"""Exit classes on the local launcher: `retries` re-runs a preempted node (SIGTERM, SIGKILL) and an infrastructure
failure, never a failure that would repeat (bad input data, an unknown error). The class is in the failure reason."""

from __future__ import annotations

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
from cloudtune.runtime import exitcodes
from cloudtune.runtime.exitcodes import ExitClass

# the first attempt marks itself and waits to be preempted (or exits with $FIRST_EXIT); the second succeeds
SCRIPT = """\
import os, pathlib, sys, time
marker = pathlib.Path(os.environ["MARKER"])
attempts = marker.with_suffix(".attempts")
attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
if marker.exists():
    sys.exit(0)
marker.write_text(str(os.getpid()))
first_exit = os.environ.get("FIRST_EXIT")
if first_exit:
    sys.exit(int(first_exit))
time.sleep(300)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTUNE_STOP_GRACE_S", "5")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/job.py").write_text(SCRIPT)
    yield tmp_path
    pid = _first_pid(tmp_path)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _first_pid(project: Path) -> int | None:
    """The PID of the first attempt's job process (it writes it to the marker)."""
    text = (project / "marker").read_text() if (project / "marker").exists() else ""
    return int(text) if text.strip() else None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _launch(project: Path, retries: int = 1, **env: str):
    spec = {"name": "classes", "command": "python job.py", "code": "src", "retries": retries,
            "env": {"MARKER": str(project / "marker"), **env}}
    (project / "job.yaml").write_text(yaml.safe_dump(spec))
    return api.launch(project / "job.yaml")


def _attempts(project: Path) -> int:
    path = project / "marker.attempts"
    return len(path.read_text()) if path.exists() else 0


def _state_file(job) -> Path:
    return Path(os.environ["CLOUDTUNE_HOME"]) / "jobs" / job.job_id / "state.json"


def _node_pid(job) -> int:
    """The PID of the (single) node's `cloudtune-run`: the supervisor's child."""
    state = _state_file(job)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = json.loads(state.read_text()).get("supervisor_pid") if state.exists() else None
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if pid and children.exists() and children.read_text().split():
            return int(children.read_text().split()[0])
        time.sleep(0.1)
    raise AssertionError("no node process")


def _wait_for_marker(project: Path) -> None:
    deadline = time.monotonic() + 30
    while _first_pid(project) is None:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_preempted_node_is_retried(project: Path, sig: signal.Signals) -> None:
    job = _launch(project)
    _wait_for_marker(project)
    os.kill(_node_pid(job), sig)  # what a cloud does to a preempted node
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    log = "\n".join(job.logs())
    assert _attempts(project) == 2 and "restarting (retry 1 of 1)" in log
    assert "[exit class: preempted, retryable]" in log
    assert not _alive(_first_pid(project))  # the preempted attempt's process ended with its node


def test_infrastructure_failure_is_retried(project: Path) -> None:
    job = _launch(project, FIRST_EXIT=str(exitcodes.EXIT_INFRASTRUCTURE))
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    assert _attempts(project) == 2


@pytest.mark.parametrize(("code", "cls"), [(exitcodes.EXIT_INPUT, "input"), (exitcodes.EXIT_DIVERGED, "diverged"),
                                           (3, "error"), (1, "error")])
def test_failure_that_would_repeat_is_not_retried(project: Path, code: int, cls: str) -> None:
    job = _launch(project, retries=3, FIRST_EXIT=str(code))
    assert job.wait(timeout=60) == "failed"
    info = job.info()
    assert _attempts(project) == 1
    assert info["failure_reason"].endswith(f"[exit class: {cls}, not retried]"), info["failure_reason"]
    state = json.loads(_state_file(job).read_text())
    assert state["exit_class"] == cls and state["exit_code"] == code


def test_retries_stop_at_the_limit(project: Path) -> None:
    (project / "src/job.py").write_text(f"import sys; sys.exit({exitcodes.EXIT_INFRASTRUCTURE})\n")
    job = _launch(project, retries=2)
    assert job.wait(timeout=60) == "failed"
    log = "\n".join(job.logs())
    assert "restarting (retry 2 of 2)" in log and "retry 3" not in log
    assert job.info()["failure_reason"].endswith("[exit class: infrastructure, retryable]")


def test_classes_table() -> None:
    """One table: every class has its own code; codes read back to their class; only cures are retried."""
    codes = [info.code for info in exitcodes.CLASSES.values()]
    assert len(set(codes)) == len(codes)
    for cls, info in exitcodes.CLASSES.items():
        assert exitcodes.classify(info.code) is cls
    assert {c for c, i in exitcodes.CLASSES.items() if i.retried} == {ExitClass.PREEMPTED, ExitClass.INFRASTRUCTURE}
    assert exitcodes.classify(-signal.SIGKILL) is ExitClass.PREEMPTED
    assert exitcodes.classify(2) is exitcodes.classify(137) is ExitClass.ERROR
    assert exitcodes.worst([ExitClass.PREEMPTED, ExitClass.ERROR, ExitClass.INPUT]) is ExitClass.INPUT

    class DistNetworkError(RuntimeError):
        pass

    assert exitcodes.exception_class(DistNetworkError("peer gone")) is ExitClass.INFRASTRUCTURE
    assert exitcodes.exception_class(KeyError("x")) is ExitClass.ERROR


def _run(job: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDTUNE_", "AZUREML_", "AIP_", "CLOUD_ML_"))}
    return subprocess.run([sys.executable, "-m", "cloudtune.entrypoint", "--job-json", json.dumps(job), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cloudtune_run_exits_with_the_input_class_on_a_data_error(tmp_path: Path) -> None:
    """A JobInputError (here: a data input that is not there) makes `cloudtune-run` exit with the input class."""
    from tests.tiny_models import make_tiny_gpt2

    model = make_tiny_gpt2(tmp_path / "tiny")
    job = {"name": "bad-data", "inputs": {"train": str(tmp_path / "missing.jsonl")},
           "train": {"task": "causal-lm", "model": str(model)}}
    res = _run(job, tmp_path)
    assert res.returncode == exitcodes.EXIT_INPUT, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_cloudtune_run_contract_error_is_an_input_error(tmp_path: Path) -> None:
    """An incomplete container contract (Azure ML without the --input its job names) would fail again: input class."""
    job = {"name": "x", "command": "true", "inputs": {"a": "x"}}
    res = subprocess.run([sys.executable, "-m", "cloudtune.entrypoint", "--job-json", json.dumps(job)],
                         cwd=tmp_path, env={**os.environ, "AZUREML_RUN_ID": "run"}, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == exitcodes.EXIT_INPUT and "container contract" in res.stdout


@pytest.mark.slow
def test_data_error_in_a_recipe_job_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's member: bad data found inside the job (past the bytes a preflight reads) fails once, with
    `retries: 2`, instead of three times."""
    from cloudtune.preflight.data import SAMPLE_BYTES
    from tests.tiny_models import make_tiny_gpt2

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    line = json.dumps({"text": "the kettle sings when the water is hot"}) + "\n"
    lines = SAMPLE_BYTES // len(line) + 100
    (tmp_path / "train.jsonl").write_text(line * lines + '{"text": "a broken line"\n')
    spec = {"name": "bad-data", "inputs": {"train": "train.jsonl"}, "retries": 2,
            "train": {"model": str(make_tiny_gpt2(tmp_path / "tiny")), "hyperparameters": {"max_steps": 2}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=180) == "failed"
    info, log = job.info(), "\n".join(job.logs())
    assert f"line {lines + 1}: invalid JSON" in info["failure_reason"], info["failure_reason"]
    assert info["failure_reason"].endswith("[exit class: input, not retried]")
    assert "restarting" not in log and log.count("[cloudtune] loading model:") - log.count(" done in ") == 1  # one attempt


def test_a_rendezvous_that_cannot_start_is_an_infrastructure_failure(tmp_path: Path) -> None:
    """torchrun's own failure (here: its master port is taken) is retried, unlike a worker's error."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDTUNE_")}
        env.update(NNODES="2", NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(held.getsockname()[1]))
        res = subprocess.run([sys.executable, "-m", "cloudtune.entrypoint", "--job-json",
                              json.dumps({"name": "x", "command": "true"})],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == exitcodes.EXIT_INFRASTRUCTURE, res.stdout + res.stderr
    assert "EADDRINUSE" in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_workers_input_error_under_torchrun_is_the_nodes_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on a node: the workers' class (input) reaches the supervisor through torchrun, not torchrun's 1."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src/job.py").write_text(f"import sys; sys.exit({exitcodes.EXIT_INPUT})\n")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "name": "workers", "command": "python job.py", "code": "src", "retries": 2,
        "resources": {"processes_per_node": 2}}))
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=120) == "failed"
    assert job.info()["failure_reason"].endswith("[exit class: input, not retried]")
    assert "restarting" not in "\n".join(job.logs())
