"""One killed rank of a 2-process local job is retried, and the job ends with the weights of an uninterrupted run.

A rank killed by a signal (the OOM killer, a crashed worker, `kill -9`) is the cause of the failure; the other
rank's collective error after it (gloo: "Connection closed by peer") and torchrun's SIGTERM to it are consequence
(cloudtune/runtime/torchrun.py). One job with `retries: 3` has one rank SIGKILLed at three stages, one per
attempt: during the data load, mid-training (after a complete checkpoint), and while rank 0 writes a checkpoint.
Each stage is found by an event (a log line, a checkpoint directory appearing), never by a duration. A kill that
lands just after the save's last file is still a kill of the writer; the test prints which it was."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from cloudtune.local.proctree import descendants  # noqa: E402
from cloudtune.local.statefile import read_state  # noqa: E402
from tests.distributed.helpers import (make_deterministic_gpt2, max_abs_diff, wait_for, weights,  # noqa: E402
                                       write_data, write_spec)

pytestmark = pytest.mark.slow
HP = {"epochs": 2, "max_steps": 15, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7}
WAIT_S = 300.0  # the bound on each wait; the job itself is bounded by max_runtime


def _rank_pid(supervisor: int, rank: int) -> int | None:
    """The pid of the torchrun worker of global `rank` below the supervisor (its environment says RANK)."""
    for pid in descendants(supervisor):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
            return pid
    return None


def _attempt_log(job_dir: Path, attempt: int) -> str:
    """The part of job.log written by attempt `attempt` (0-based)."""
    parts = (job_dir / "job.log").read_text().split("[cloudtune] restarting (retry ")
    return parts[attempt] if len(parts) > attempt else ""


def _checkpoint_being_written(ckpt_dir: Path, after: int) -> Path | None:
    """The temp dir of a checkpoint newer than step `after` that rank 0 is writing (cloudtune.train.checkpoints)."""
    from cloudtune.train.checkpoints import TMP_PREFIX

    try:
        names = os.listdir(ckpt_dir)
    except OSError:
        return None
    prefix = f"{TMP_PREFIX}checkpoint-"
    return next((ckpt_dir / n for n in names if n.startswith(prefix) and n[len(prefix):].split("-")[0].isdigit()
                 and int(n[len(prefix):].split("-")[0]) > after), None)


def _complete_steps(ckpt_dir: Path) -> list[int]:
    from cloudtune.train.checkpoints import list_checkpoints, verify

    return [c.step for c in list_checkpoints(ckpt_dir) if verify(c.path) is None]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTUNE_STOP_GRACE_S", "10")
    return {"root": tmp_path, "model": make_deterministic_gpt2(tmp_path / "tiny"), "inputs": write_data(tmp_path)}


def _spec(env: dict, name: str, retries: int, job_env: dict[str, str] | None = None) -> Path:
    return write_spec(env["root"] / f"{name}.yaml", env["model"], env["inputs"], hp=HP, eval_set=False, name=name,
                      resources={"processes_per_node": 2, "max_runtime": 1800}, retries=retries,
                      checkpoint={"every_steps": 3, "keep": 3}, env=job_env or {})


def test_one_rank_killed_at_three_stages_is_retried_to_the_same_weights(env: dict) -> None:
    # the save of step 6 hangs once in the whole job (cloudtune.train.checkpoints: CLOUDTUNE_FAULT_ONCE_DIR), so the
    # mid-training kill lands with checkpoint 3 complete however fast the machine is, and no retry hangs there again
    stall = {"CLOUDTUNE_FAULT_AT": "before@6:stall", "CLOUDTUNE_FAULT_ONCE_DIR": str(env["root"] / "faults")}
    job = api.launch(_spec(env, "killed", retries=3, job_env=stall))
    job_dir = Path(os.environ["CLOUDTUNE_HOME"]) / "jobs" / job.job_id
    ckpt_dir = job_dir / "hosts/algo-1/opt/ml/checkpoints"
    stages: list[str] = []
    try:
        supervisor = int(wait_for(lambda: read_state(job_dir).get("supervisor_pid"), WAIT_S, "the supervisor"))

        def kill(rank: int, attempt: int) -> None:
            pid = wait_for(lambda: read_state(job_dir).get("attempt") == attempt and _rank_pid(supervisor, rank),
                           WAIT_S, f"rank {rank} of attempt {attempt + 1}")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: "[cloudtune] torchrun: first failure:" in _attempt_log(job_dir, attempt), WAIT_S,
                     f"attempt {attempt + 1} to fail")

        # 1. during the data load: no checkpoint yet, the retry starts from the beginning
        wait_for(lambda: "preparing data: input 'train' (load, tokenise)\n" in _attempt_log(job_dir, 0), WAIT_S,
                 "the data load")
        kill(1, 0)
        stages.append("data load")
        # 2. mid-training: attempt 2 hangs in the save of step 6, after its checkpoint 3 is complete
        wait_for(lambda: "fault injection" in _attempt_log(job_dir, 1) and _complete_steps(ckpt_dir) == [3], WAIT_S,
                 "attempt 2 to hang in its second save")
        kill(1, 1)
        stages.append("mid-training")
        # 3. the writer (rank 0), as soon as a newer checkpoint directory appears
        from cloudtune.train.checkpoints import list_checkpoints  # a checkpoint-N dir appears complete (a rename)

        # the newest checkpoint dir, finished or not: rank 0 may have begun step 6's while rank 1 hung in the fault
        newest = max(c.step for c in list_checkpoints(ckpt_dir))

        wait_for(lambda: read_state(job_dir).get("attempt") == 2 and _rank_pid(supervisor, 0), WAIT_S, "attempt 3")
        saving = wait_for(lambda: _checkpoint_being_written(ckpt_dir, newest) or
                          [c for c in list_checkpoints(ckpt_dir) if c.step > newest], WAIT_S, "a checkpoint being written",
                          interval=0.002)
        kill(0, 2)
        stages.append("during a save" if isinstance(saving, Path) else "just after a save")
        assert job.wait(timeout=WAIT_S) == "succeeded", "\n".join(job.logs())
    finally:
        if job.status() not in ("succeeded", "failed", "cancelled"):
            job.cancel()
            job.wait(timeout=60)
    log = (job_dir / "job.log").read_text()
    print(f"rank kills: {stages}")
    assert "restarting (retry 3 of 3)" in log and "not retried" not in log
    assert log.count("[exit class: preempted, retryable]") == 3
    assert log.count("was killed by SIGKILL") >= 3
    assert "[exit class: error" not in log

    reference = api.launch(_spec(env, "reference", retries=0))
    assert reference.wait(timeout=WAIT_S) == "succeeded", "\n".join(reference.logs())
    diff = max_abs_diff(weights(Path(job.model_uri)), weights(Path(reference.model_uri)))
    print(f"killed 3 times vs uninterrupted, 2 processes: max abs weight diff {diff}")
    assert diff == 0.0


def test_the_first_failure_is_the_cause() -> None:
    from cloudtune.runtime.exitcodes import EXIT_INFRASTRUCTURE, EXIT_PREEMPTED, EXIT_INPUT, ExitClass, exception_class
    from cloudtune.runtime.torchrun import RankExit, first_failure, node_code, report

    killed, lost_peer, stopped = RankExit(1, -9, 11), RankExit(0, EXIT_INFRASTRUCTURE, 10), RankExit(2, -15, 12)
    assert first_failure([lost_peer, killed, stopped]) is killed  # the lost peer is what rank 0 saw after rank 1 died
    assert node_code(killed) == EXIT_PREEMPTED
    assert first_failure([RankExit(3, EXIT_INPUT), lost_peer]).code == EXIT_INPUT
    assert first_failure([lost_peer, stopped]) is lost_peer  # all consequence: the first one seen
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:10450. This is typically caused by a remote worker crashing.")
    assert exception_class(gloo) is ExitClass.INFRASTRUCTURE
    assert exception_class(RuntimeError("shape mismatch")) is ExitClass.ERROR


def test_a_killed_rank_names_itself_in_the_failure_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtune.runtime.torchrun import FAILURE_FILE_VAR, RankExit, report

    failure = tmp_path / "opt/ml/output/failure"
    failure.parent.mkdir(parents=True)
    failure.write_text("AlgorithmError: RuntimeError: gloo Connection closed by peer [exit class: infrastructure, retryable]")
    code = report([RankExit(0, 75, 10), RankExit(1, -9, 11)], {FAILURE_FILE_VAR: str(failure)})
    assert code == 143
    text = failure.read_text()
    assert text.startswith("AlgorithmError: rank 1 was killed by SIGKILL (pid 11), the first rank to fail; then rank 0")
    assert text.endswith("[exit class: preempted, retryable]")
    assert "first failure: rank 1 was killed by SIGKILL" in capsys.readouterr().out
