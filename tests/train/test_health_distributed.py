"""Health checks in jobs of 2 CPU processes (gloo) on the local launcher: the collapse probe generates on every rank
under FSDP (a collective forward) without hanging, keep_best loads the best checkpoint into the sharded model; a
diverging DDP job stops every rank at the same step, prints the one line once, exits 66 (class diverged) and is not
retried even with `retries: 1`; triage names the cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from cloudtune.train.health import DIVERGED_PREFIX, HEALTH_PREFIX  # noqa: E402
from tests.distributed.helpers import launch_and_wait, make_deterministic_gpt2, write_data, write_spec  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("health-dist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        yield {"root": root, "model": make_deterministic_gpt2(root / "tiny-gpt2-nodrop"), "inputs": write_data(root)}


def _launch(env, name: str, hp: dict, distributed: str, **train: object) -> api.Job:
    spec = write_spec(env["root"] / f"{name}.yaml", env["model"], env["inputs"], hp=hp, name=name,
                      resources={"processes_per_node": 2}, checkpoint={"every_steps": 2, "keep": 1}, retries=1,
                      train_options={"distributed": distributed, **train})
    return launch_and_wait(spec)


def test_fsdp_collapse_probe_and_keep_best_run_on_every_rank(env) -> None:
    hp = {"max_steps": 8, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7, "eval_every": 2}
    job = _launch(env, "fsdp-health", hp, "fsdp", keep_best=True, health={"collapse": True, "prompts": 2})
    log = "\n".join(job.logs())
    assert job.status() == "succeeded", log
    metrics = json.loads((Path(job.model_uri) / "metrics.json").read_text())
    assert metrics["best_step"] in (2, 4, 6, 8)
    assert not [ln for ln in log.splitlines() if ln.startswith((DIVERGED_PREFIX, "[cloudtune] error:"))]


def test_ddp_divergence_stops_every_rank_with_one_line_and_no_retry(env) -> None:
    hp = {"max_steps": 30, "learning_rate": 10, "batch_size": 4, "max_seq_len": 32, "seed": 7}
    job = _launch(env, "ddp-diverge", hp, "ddp")
    log = "\n".join(job.logs())
    assert job.status() == "failed", log
    stops = [ln for ln in log.splitlines() if ln.startswith(DIVERGED_PREFIX)]
    assert len(stops) == 1, log  # rank 0 only, and one attempt only
    assert "restarting (retry" not in log
    assert not [ln for ln in log.splitlines() if ln.startswith(HEALTH_PREFIX)]
    assert job.record.extra.get("exit_code") == 66
    assert job.triage()["cause"] == "diverged"
