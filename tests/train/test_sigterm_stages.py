"""SIGTERM at every stage of a save, on the local launcher, with checkpoints on emulated bucket mounts.

The faults come from `CLOUDTUNE_FAULT_AT` (cloudtune.train.checkpoints.fault_point), passed through the job's `env`:
the save code signals itself at the named stage of the named step's save, so each test is a sequence of events, not
of timings. Each SIGTERM must end its attempt with the stop checkpoint and exit 143 (class preempted), the supervisor
must retry, the next attempt must resume from that checkpoint, and the job must end with the weights of an
uninterrupted run. A stop path that hangs (`exit...:stall`: a collective or a mount that never returns, as in issue
19's 14-minute hang) must still end at the stop deadline (cloudtune.runtime.stopping), set to a few seconds here.

Stages (1 process, emulate gcp, /gcs refuses directory renames): before the save, during the write, at the manifest
(publish), during rotation, at the start of the background commit thread, and a stalled exit.
Stages (2 processes under torchrun, emulate azure, blobfuse outputs): the whole node's process group signalled during
the write, then one rank signalled in its commit thread with both ranks' exits stalled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SENTENCES = ["the kettle sings when the water is hot", "a sail fills with wind and the boat moves",
             "roast the beans until the first crack", "the river runs to the sea in spring"]
STOP_LINE = re.compile(r"SIGTERM received: checkpoint saved at step (\d+), exiting")
RESUME_LINE = re.compile(r"resuming from checkpoint (\S+) \(step (\d+)\)")
STEPS = 26  # the 1-process run: its last fault at step 21, and room after it
WAIT_S = 900  # a bound on each job, far above its run time: the assertions are on events


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.distributed.helpers import make_deterministic_gpt2

    return make_deterministic_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _job(workdir: Path, model: Path, emulate: str, *, max_steps: int, env: dict[str, str], retries: int,
         processes: int = 1) -> Path:
    import yaml

    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": f"{SENTENCES[i % 4]} {i}"}) + "\n" for i in range(64)))
    spec = {
        "name": "stages",
        "inputs": {"train": str(data / "train.jsonl")},
        "train": {"model": str(model), "data": {"train": "train", "eval": None},
                  "hyperparameters": {"epochs": 100, "max_steps": max_steps, "learning_rate": 3e-3, "batch_size": 4,
                                      "max_seq_len": 32, "seed": 11}},
        "checkpoint": {"every_steps": 2, "keep": 1},  # keep 1: every commit after the first rotates one out
        "resources": {"processes_per_node": processes},
        "retries": retries,
        "env": env,
        "providers": {"local": {"emulate": emulate}},
    }
    path = workdir / f"job-{len(env)}-{retries}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(path: Path) -> tuple[object, str]:
    from cloudtune import api

    job = api.launch(path)
    state = job.wait(timeout=WAIT_S)
    log = "\n".join(job.logs())
    assert state == "succeeded", log[-6000:]
    return job, log


def _weights(job: object) -> dict:
    from tests.distributed.helpers import weights

    return weights(Path(job.model_uri))  # type: ignore[attr-defined]


def test_sigterm_at_every_stage_of_a_save_exits_and_resumes_to_the_same_weights(tmp_path: Path, home: Path,
                                                                               model: Path) -> None:
    from tests.distributed.helpers import max_abs_diff

    faults = ["before@4", "write@6", "publish@8", "rotate@14", "commit-thread@20", "exit@21:stall"]
    env = {"CLOUDTUNE_FAULT_AT": ",".join(faults), "CLOUDTUNE_STOP_DEADLINE_S": "5"}
    job, log = _run(_job(tmp_path / "faults", model, "gcp", max_steps=STEPS, env=env, retries=5))
    fired = [(stage, int(step)) for _, stage, step in
             re.findall(r"fault injection \(CLOUDTUNE_FAULT_AT\): (\w+) at ([\w-]+), step (\d+)", log)]
    assert fired[:5] == [("before", 4), ("write", 6), ("publish", 8), ("rotate", 14), ("commit-thread", 20)]
    # each SIGTERM: the stop checkpoint at a step end after it, exit 143 (preempted), a retry that resumes from it.
    # A SIGTERM sent from the background commit thread (publish, rotate, commit-thread) lands at a step end some
    # steps later (the thread runs beside training, and how far it lags depends on the machine's load): the faults
    # are 6 steps apart, so each stop lands after its fault and before the next one.
    stops = [int(s) for s in STOP_LINE.findall(log)]
    assert stops == sorted(set(stops)) and len(stops) == 5, stops
    ends = [step for _, step in fired[1:5]] + [STEPS]
    assert all(step < stop < end for (_, step), stop, end in zip(fired[:5], stops, ends)), (stops, fired)
    assert [int(step) for _, step in RESUME_LINE.findall(log)] == stops
    assert log.count("[exit class: preempted") >= len(stops) and "restarting (retry 5 of 5)" in log
    # the stalled exit (a hung collective or mount) ended at the stop deadline, not at max_runtime
    assert ("exit", 21) not in fired or "stop deadline: SIGTERM received 5 s ago and this process has not exited" in log
    assert "directory rename" not in log and "Traceback" not in log
    assert json.loads((Path(job.model_uri) / "metrics.json").read_text())["global_step"] == STEPS  # type: ignore[attr-defined]

    reference, _ = _run(_job(tmp_path / "reference", model, "gcp", max_steps=STEPS, env={}, retries=0))
    assert max_abs_diff(_weights(job), _weights(reference)) == 0.0


def test_two_processes_stop_within_the_bound_and_resume(tmp_path: Path, home: Path, model: Path) -> None:
    faults = ["write@4:sigterm-group", "commit-thread@6", "exit@7:stall"]
    env = {"CLOUDTUNE_FAULT_AT": ",".join(faults), "CLOUDTUNE_STOP_DEADLINE_S": "5"}
    job, log = _run(_job(tmp_path / "faults", model, "azure", max_steps=14, env=env, retries=2, processes=2))
    assert "torchrun: 1 node(s) x 2 process(es)" in log
    # the whole group signalled mid-write: both ranks saved step 5 together and exited; one rank signalled in its
    # commit thread: the other rank agreed at the step end; both exits stalled: both watchdogs ended them
    stops = sorted({int(s) for s in STOP_LINE.findall(log)})
    assert len(stops) == 2 and stops[0] == 5 and 6 < stops[1] < 14, stops  # the commit thread's: a later step end
    assert [int(step) for _, step in RESUME_LINE.findall(log)] == stops
    stalled = "fault injection (CLOUDTUNE_FAULT_AT): stall at exit, step 7" in log
    assert log.count("stop deadline: SIGTERM received 5 s ago and this process has not exited") == (2 if stalled else 0)
    assert "restarting (retry 2 of 2)" in log and "MaxRuntimeExceeded" not in log
    assert json.loads((Path(job.model_uri) / "metrics.json").read_text())["global_step"] == 14  # type: ignore[attr-defined]
