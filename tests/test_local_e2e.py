"""End to end on the local launcher: a real (tiny) fine-tune under each emulated cloud contract, the CLI's
JSON, detached jobs with list/status/logs/cancel, resume after a kill, and two emulated nodes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.local.launcher import LocalLauncher
from tests.tiny_models import make_tiny_gpt2

pytestmark = pytest.mark.slow
SENTENCES = ["the kettle sings when the water is hot", "a sail fills with wind and the boat moves",
             "roast the beans until the first crack", "the river runs to the sea in spring"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_job(tmp_path: Path, model: Path, **extra: object) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": SENTENCES[i % 4]}) + "\n" for i in range(64)))
    (data / "eval.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    hp = {"epochs": 1, "max_steps": 8, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7}
    hp.update(extra.pop("hp", {}))  # type: ignore[arg-type]
    spec = {
        "name": "e2e",
        "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
        "train": {"model": str(model), "hyperparameters": hp},
        "checkpoint": {"every_steps": 4, "keep": 2},
        **extra,
    }
    path = tmp_path / "job.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def check_model(model_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    return metrics


QUICKSTART = Path(__file__).resolve().parent.parent / "examples/quickstart/job.yaml"


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_quickstart_job_under_each_contract(home: Path, tiny_model: Path, emulate: str) -> None:
    """The quickstart's own job.yaml and data, on a tiny model and a few steps, under each cloud's contract."""
    job = api.launch(QUICKSTART, overrides=[
        f"providers.local.emulate={emulate}", f"train.model={tiny_model}",
        "train.hyperparameters.max_steps=8", "train.hyperparameters.learning_rate=3e-3", "checkpoint.every_steps=4",
    ])
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    log = "\n".join(job.logs())
    assert f"provider={emulate}" in log
    job_dir = home / "jobs" / job.job_id
    model_dir = Path(job.model_uri)
    check_model(model_dir)
    if emulate == "aws":
        assert model_dir == job_dir / "hosts/algo-1/opt/ml/model"
        assert (job_dir / "hosts/algo-1/opt/ml/input/config/resourceconfig.json").is_file()
        assert list((job_dir / "hosts/algo-1/opt/ml/checkpoints").glob("checkpoint-*"))
    elif emulate == "gcp":
        assert model_dir == job_dir / f"fs/gcs/cloudtune-local/jobs/{job.job_id}/model"
        assert list((model_dir.parent / "checkpoints").glob("checkpoint-*"))
    else:
        assert model_dir == job_dir / "mounts/outputs/model"
        assert (job_dir / "mounts/inputs/train/train.jsonl").is_file()


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def test_cli_launch_json_status_logs_list(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model)
    res = cli("launch", str(spec), "--json", home=home)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout)
    assert info["state"] == "succeeded" and info["provider"] == "local"
    assert Path(info["model_uri"]).is_dir()
    assert "eval_loss" in res.stderr  # logs stream to stderr in --json mode
    status = json.loads(cli("status", info["job_id"], "--json", home=home).stdout)
    assert status["job_id"] == info["job_id"] and status["state"] == "succeeded"
    assert "eval_loss" in cli("logs", info["job_id"], home=home).stdout
    listed = json.loads(cli("list", "--json", home=home).stdout)
    assert [r["job_id"] for r in listed] == [info["job_id"]]


def test_bad_data_is_refused_at_launch_with_one_clear_line_and_no_traceback(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    """The preflight finds it before any job starts (errors found only inside a job: tests/train/test_job_inputs.py)."""
    spec = write_job(tmp_path, tiny_model)
    (tmp_path / "data/train.jsonl").write_text('{"body": "the field is misnamed"}\n')
    res = cli("launch", str(spec), home=home)
    assert res.returncode == 2
    output = res.stdout + res.stderr
    lines = [ln for ln in output.strip().splitlines() if not ln.startswith("preflight: ")]  # the progress line
    assert "Traceback" not in output and len(lines) == 1, output
    assert "data/train.jsonl, line 1: cannot tell the data format (fields present: body)" in output
    assert "train.data.text_field" in output  # says how to fix it
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())  # no job was started


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_detached_job_cancel(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model, hp={"max_steps": 100000, "epochs": 1000})
    res = cli("launch", str(spec), "--detach", "--json", home=home)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["state"] in ("pending", "running")
    job = api.get_job(info["job_id"], launcher=LocalLauncher())
    wait_for(lambda: "step=" in "\n".join(job.logs()), 180, "a training step")
    assert job.status() == "running"
    out = cli("cancel", job.job_id[:-2], home=home)  # a unique prefix works
    assert out.returncode == 0 and "cancelled" in out.stdout
    state = json.loads((home / "jobs" / job.job_id / "state.json").read_text())
    assert state["state"] == "cancelled"
    pid = state["supervisor_pid"]
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3], 30, "supervisor exit")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def stalled_at_second_save(tmp_path: Path) -> dict[str, str]:
    """The job's env for a kill at a known point, whatever the machine's speed: the save of step 4 hangs, once in the
    whole job (not again in its retry), so checkpoint 2 is the newest complete one when the test kills it."""
    return {"CLOUDTUNE_FAULT_AT": "before@4:stall", "CLOUDTUNE_FAULT_ONCE_DIR": str(tmp_path / "faults")}


def wait_stalled_after(job: api.Job, ckpt: Path, step: int) -> None:
    """Until the job hangs in its fault and checkpoint `step` is complete (its manifest verified)."""
    from cloudtune.train.checkpoints import list_checkpoints, verify

    wait_for(lambda: "fault injection" in "\n".join(job.logs()) and ckpt.is_dir() and
             [c.step for c in list_checkpoints(ckpt) if verify(c.path) is None] == [step], 600, "the stall")


@contextmanager
def ended_with_the_test(job: api.Job) -> Iterator[None]:
    """A job left running by a failed assertion (hung in its fault for good) is cancelled, processes and all."""
    try:
        yield
    finally:
        if job.status() not in ("succeeded", "failed", "cancelled"):
            job.cancel()
            job.wait(timeout=120)


def resumed_step(log: str) -> int | None:
    """The step of the first `resuming from checkpoint` line in `log` (cloudtune.contracts.logfmt.RESUME_LOG_FORMAT)."""
    found = re.search(r"resuming from checkpoint \S+ \(step (\d+)\)", log)
    return int(found.group(1)) if found else None


def test_resume_after_kill(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model, retries=1, hp={"max_steps": 16}, checkpoint={"every_steps": 2, "keep": 2},
                     env=stalled_at_second_save(tmp_path))
    job = api.launch(spec)
    ckpt = home / "jobs" / job.job_id / "hosts/algo-1/opt/ml/checkpoints"
    with ended_with_the_test(job):
        wait_stalled_after(job, ckpt, 2)
        pid = json.loads((home / "jobs" / job.job_id / "state.json").read_text())["supervisor_pid"]
        for child in children(pid):
            os.kill(child, signal.SIGKILL)
        assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    log = "\n".join(job.logs())
    assert "retry 1 of 1" in log and resumed_step(log.split("retry 1 of 1")[1]) == 2
    metrics = check_model(Path(job.model_uri))
    assert metrics["global_step"] == 16


def test_two_nodes(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    spec = write_job(tmp_path, tiny_model, resources={"nodes": 2})
    job = api.launch(spec)
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    log = "\n".join(job.logs())
    assert "[algo-1]" in log and "[algo-2]" in log and "torchrun: 2 node(s)" in log
    check_model(Path(job.model_uri))
    assert not (home / "jobs" / job.job_id / "hosts/algo-2/opt/ml/model/metrics.json").exists()  # only rank 0 writes


def test_two_nodes_resume_after_a_node_is_killed(tmp_path: Path, home: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host of a retried job finds the checkpoints (SageMaker restores them from S3 onto each host)."""
    monkeypatch.setenv("CLOUDTUNE_STOP_GRACE_S", "5")  # the node left hanging in the fault is stopped soon
    spec = write_job(tmp_path, tiny_model, resources={"nodes": 2}, retries=1, hp={"max_steps": 24},
                     checkpoint={"every_steps": 2, "keep": 2}, env=stalled_at_second_save(tmp_path))
    job = api.launch(spec)
    ckpt = home / "jobs" / job.job_id / "hosts/algo-1/opt/ml/checkpoints"
    with ended_with_the_test(job):
        wait_stalled_after(job, ckpt, 2)
        pid = json.loads((home / "jobs" / job.job_id / "state.json").read_text())["supervisor_pid"]
        os.kill(children(pid)[-1], signal.SIGKILL)  # the second node
        assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    log = "\n".join(job.logs())
    assert "retry 1 of 1" in log and resumed_step(log.split("retry 1 of 1")[1]) == 2
    assert json.loads((Path(job.model_uri) / "metrics.json").read_text())["global_step"] == 24
