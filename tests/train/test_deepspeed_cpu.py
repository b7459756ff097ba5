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
from tests.distributed.helpers import make_deterministic_gpt2, write_data, write_spec  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("deepspeed-cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        yield {"root": root, "model": make_deterministic_gpt2(root / "tiny-gpt2"), "inputs": write_data(root)}


@pytest.mark.parametrize("stage", ["deepspeed-zero2", "deepspeed-zero3"])
def test_a_deepspeed_job_trains_on_two_cpu_processes(env, stage: str) -> None:
    import yaml
    from transformers import AutoModelForCausalLM

    hp = {"max_steps": 6, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7}
    spec = write_spec(env["root"] / f"{stage}.yaml", env["model"], env["inputs"], hp=hp, name=stage,
                      resources={"processes_per_node": 2}, checkpoint={"every_steps": 3, "keep": 2})
    data = yaml.safe_load(spec.read_text())
    data["train"]["distributed"] = stage
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    job = api.launch(spec)
    try:
        job.wait(timeout=300)
    except TimeoutError:
        tail = "\n".join(job.logs())[-6000:]
        job.cancel()
        pytest.fail(f"job {stage} did not end within 300 s; its log ends with:\n{tail}")
    log = "\n".join(job.logs())
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
