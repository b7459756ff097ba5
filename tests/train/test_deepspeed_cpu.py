"""`distributed: deepspeed-zero2|zero3` in local jobs of 2 CPU processes, on DeepSpeed's CPU accelerator: the job
trains through accelerate's DeepSpeed integration with cloudtune's generated config, checkpoints, evaluates after
training (not before: `cloudtune.train.flow.NO_EVAL_BEFORE_DEEPSPEED`), and writes full weights that load with
`from_pretrained` (ZeRO-3 gathers them on save). Runs where deepspeed is installed (it has
no wheel on PyPI: `DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed`, which needs `wheel`); CI does not
install it, so there this module is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from cloudtune.train.flow import NO_EVAL_BEFORE_DEEPSPEED  # noqa: E402
from tests.distributed.helpers import launch_and_wait, make_deterministic_gpt2, write_data, write_spec  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("deepspeed-cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        yield {"root": root, "model": make_deterministic_gpt2(root / "tiny-gpt2"), "inputs": write_data(root)}


def _run(ctx, name: str, stage: str, **extra: object) -> tuple[api.Job, str]:
    hp = {"max_steps": 6, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7}
    spec = write_spec(ctx["root"] / f"{name}.yaml", ctx["model"], ctx["inputs"], hp=hp, name=name,
                      resources={"processes_per_node": 2}, checkpoint={"every_steps": 3, "keep": 2},
                      train_options={"distributed": stage}, **extra)
    job = launch_and_wait(spec)
    return job, "\n".join(job.logs())


@pytest.mark.parametrize("stage", ["deepspeed-zero2", "deepspeed-zero3"])
def test_a_deepspeed_job_trains_on_two_cpu_processes(env, stage: str) -> None:
    from transformers import AutoModelForCausalLM

    job, log = _run(env, stage, stage)
    assert job.status() == "succeeded", log[-6000:]
    assert f"distributed: {stage} without a CUDA GPU: DeepSpeed's CPU accelerator" in log
    assert NO_EVAL_BEFORE_DEEPSPEED in log  # transformers cannot evaluate before train() builds the engine
    metrics = json.loads((Path(job.model_uri) / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and "eval_loss_after" in metrics and "eval_loss_before" not in metrics
    trained = AutoModelForCausalLM.from_pretrained(job.model_uri)
    base = AutoModelForCausalLM.from_pretrained(env["model"])
    assert sum(p.numel() for p in trained.parameters()) == sum(p.numel() for p in base.parameters())
    moved = max(float((a - b).abs().max()) for a, b in zip(trained.parameters(), base.parameters()))
    assert moved > 0  # the full weights, gathered from the shards, trained


def test_a_stopped_zero3_job_resumes_from_its_deepspeed_checkpoint(env) -> None:
    """A SIGTERM to the whole process group (a cloud's stop) while step 3's checkpoint is saved: every rank saves
    the stop checkpoint (DeepSpeed's sharded engine state inside cloudtune's complete-or-absent checkpoint), exits
    143, and the retry resumes from it to the same weights as an uninterrupted run."""
    from tests.distributed.helpers import max_abs_diff, weights

    fault = {"CLOUDTUNE_FAULT_AT": "before@3:sigterm-group", "CLOUDTUNE_STOP_DEADLINE_S": "20"}
    job, log = _run(env, "zero3-stopped", "deepspeed-zero3", env=fault, retries=1)
    assert job.status() == "succeeded", log[-6000:]
    assert "fault injection (CLOUDTUNE_FAULT_AT): sigterm-group at before, step 3" in log
    assert "[exit class: preempted" in log and "resuming from checkpoint" in log
    assert json.loads((Path(job.model_uri) / "metrics.json").read_text())["global_step"] == 6
    reference, _ = _run(env, "zero3-reference", "deepspeed-zero3")
    assert max_abs_diff(weights(Path(job.model_uri)), weights(Path(reference.model_uri))) == 0.0
