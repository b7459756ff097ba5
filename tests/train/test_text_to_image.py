"""The text-to-image recipe end to end on a tiny Stable-Diffusion-shaped pipeline (tests/tiny_diffusion.py: built
from configs, never downloaded), CPU only, one torch thread (the results do not depend on the machine's speed)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cloudtune.runtime.types import RuntimeContext  # noqa: E402
from cloudtune.spec import CheckpointSpec, TrainSpec  # noqa: E402
from cloudtune.train import run_recipe  # noqa: E402
from cloudtune.train.checkpoints import list_checkpoints, verify  # noqa: E402

from tests.tiny_diffusion import make_colour_images, make_tiny_sd_pipeline
from tests.train.killing import kill_at_first_checkpoint

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_in", "conv_out", "proj_in", "proj_out"]
RED = {"red": (220, 30, 30)}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("pipe") / "tiny-sd")


def make_spec(**over: object) -> TrainSpec:
    hp = {"resolution": 32, "max_steps": 60, "batch_size": 4, "learning_rate": 1.5e-2, "seed": 1}
    hp |= over.pop("hp", {})  # type: ignore[operator]
    spec = {"task": "text-to-image", "model": "base", "lora": {"r": 8, "alpha": 16, "target_modules": TARGETS},
            "hyperparameters": hp,
            "validation": {"prompts": ["a red square", "a blue square"], "every_steps": 30, "seeds": [0, 1],
                           "steps": 10, "guidance_scale": 1.0}} | over
    return TrainSpec.model_validate(spec)


def ctx_for(root: Path, pipe: Path, colours: dict = RED, layout: str = "metadata") -> RuntimeContext:
    data = make_colour_images(root / "in" / "train", colours, per_colour=8, layout=layout)
    return RuntimeContext.single_process(root, {"train": data, "base": pipe}, job_name="t", provider="local")


def pixels(path: Path) -> "object":
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def reconstruction(pipe_dir: Path, image: Path) -> "object":
    """What a perfectly trained model would render for the training image: its VAE round trip (the tiny VAE is
    random, so the trained colour in pixels is this, not the image's own colour)."""
    import numpy as np
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(pipe_dir), subfolder="vae")
    x = torch.from_numpy(pixels(image).astype("float32") / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
    return np.clip((out.permute(1, 2, 0).numpy() + 1) * 127.5, 0, 255)


def render_with_lora(pipeline_class: type, pipe_dir: Path, lora_dir: Path, steps: int) -> "object":
    """"a red square" at 32 px, seed 0 (as the job's sample prompt0-seed0), from `pipeline_class.from_pretrained(
    pipe_dir)` with the job's LoRA loaded the documented way (`load_lora_weights`)."""
    pipe = pipeline_class.from_pretrained(str(pipe_dir))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_dir))
    return pipe("a red square", num_inference_steps=steps, guidance_scale=1.0, height=32, width=32,
                generator=torch.Generator("cpu").manual_seed(0)).images[0]


def rms(a: "object", b: "object") -> float:
    import numpy as np

    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.mark.slow
def test_training_moves_samples_toward_the_trained_colour_and_the_lora_reloads(tiny_pipe: Path, tmp_path: Path,
                                                                               capsys) -> None:
    from diffusers import StableDiffusionPipeline

    ctx = ctx_for(tmp_path, tiny_pipe)
    metrics = run_recipe(ctx, make_spec(), CheckpointSpec(every_steps=30, keep=2))
    out = capsys.readouterr().out
    model = ctx.model_dir
    assert (model / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((model / "metrics.json").read_text())["global_step"] == 60
    card = (model / "README.md").read_text()
    assert "load_lora_weights" in card and "base_model:" not in card  # an input's folder is no Hub id
    assert "cache: latents and text embeddings of 8 images written" in out

    # the loss falls: the first logged steps' mean above the last ones', and the fixed-noise validation loss too
    history = json.loads((ctx.checkpoint_dir / "checkpoint-60" / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    index = json.loads((model / "samples" / "samples.json").read_text())
    by_step = {e["step"]: e for e in index["steps"]}
    assert sorted(by_step) == [0, 30, 60]
    assert by_step[60]["val_loss"] < 0.8 * by_step[0]["val_loss"]

    # the trained caption's samples move toward the trained colour, for every seed
    target = reconstruction(tiny_pipe, ctx.inputs["train"] / "red_0.png")
    for seed in (0, 1):
        before = rms(pixels(model / "samples" / "step-000000" / f"prompt0-seed{seed}.png"), target)
        after = rms(pixels(model / "samples" / "step-000060" / f"prompt0-seed{seed}.png"), target)
        print(f"seed {seed}: distance to the trained colour {before:.2f} -> {after:.2f}")
        assert after < before - 0.5

    # the saved LoRA, loaded the documented way, renders the job's own samples
    image = render_with_lora(StableDiffusionPipeline, tiny_pipe, model, steps=10)
    assert rms(pixels(model / "samples" / "step-000060" / "prompt0-seed0.png"), image) < 1.0

    # a healthy run: no collapse warning, no divergence
    assert "health:" not in out
    assert metrics["sample_distance"] > 0.25 * metrics["sample_distance_base"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    import tests.train.test_text_to_image as t
    from cloudtune.train import run_recipe
    root = Path({root!r})
    ctx = t.RuntimeContext.single_process(root, {{"train": root / "in" / "train", "base": Path({pipe!r})}},
                                          job_name="t", provider="local")
    run_recipe(ctx, t.resume_spec(), t.CheckpointSpec(every_steps=4, keep=2))
    """
)


def resume_spec() -> TrainSpec:
    """Every random choice on: random crops (latents encoded each step), flips, caption dropout, noise offset,
    min-SNR weighting; no validation (the weights are compared)."""
    return make_spec(hp={"max_steps": 12, "noise_offset": 0.1, "snr_gamma": 5.0},
                     data={"random_flip": True, "center_crop": False, "caption_dropout": 0.3}, validation=None)


def lora_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "pytorch_lora_weights.safetensors"))


@pytest.mark.slow
def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_pipe: Path, tmp_path: Path, capsys) -> None:
    ckpt = CheckpointSpec(every_steps=4, keep=2)
    reference_ctx = ctx_for(tmp_path / "ref", tiny_pipe, {"red": (220, 30, 30), "blue": (30, 40, 220)})
    run_recipe(reference_ctx, resume_spec(), ckpt)

    kill_root = tmp_path / "killed"
    ctx = ctx_for(kill_root, tiny_pipe, {"red": (220, 30, 30), "blue": (30, 40, 220)})
    script = kill_root / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(Path(__file__).resolve().parents[2]),
                                         root=str(kill_root), pipe=str(tiny_pipe)))
    kill_at_first_checkpoint(script, ctx.checkpoint_dir, second=8)
    saved = [c.step for c in list_checkpoints(ctx.checkpoint_dir) if verify(c.path) is None]
    assert saved == [4] and not (ctx.model_dir / "metrics.json").exists()
    capsys.readouterr()

    resumed = run_recipe(ctx, resume_spec(), ckpt)
    assert f"(step {max(saved)})" in capsys.readouterr().out
    assert resumed["global_step"] == 12
    ref, got = lora_weights(reference_ctx.model_dir), lora_weights(ctx.model_dir)
    assert ref.keys() == got.keys()
    diff = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    print(f"max abs LoRA weight difference after resume: {diff}")
    assert diff < 1e-6


@pytest.mark.slow
def test_an_sdxl_pipeline_trains_and_its_lora_reloads(tmp_path: Path, capsys) -> None:
    """SDXL's path (two text encoders, the pooled embedding, size micro-conditioning) on a tiny SDXL pipeline built
    the way diffusers' SDXL fast tests build theirs: the job trains, and its LoRA, loaded the documented way into
    StableDiffusionXLPipeline, renders the job's own final sample."""
    from diffusers import StableDiffusionXLPipeline
    from tests.tiny_diffusion import make_tiny_sdxl_pipeline

    pipe_dir = make_tiny_sdxl_pipeline(tmp_path / "tiny-sdxl")
    ctx = ctx_for(tmp_path, pipe_dir)
    spec = make_spec(hp={"max_steps": 12}, validation={"prompts": ["a red square", "a blue square"], "every_steps": 6,
                                                       "seeds": [0, 1], "steps": 4, "guidance_scale": 1.0})
    metrics = run_recipe(ctx, spec, CheckpointSpec(every_steps=6, keep=2))
    out = capsys.readouterr().out
    assert metrics["global_step"] == 12 and "health:" not in out
    model = ctx.model_dir
    trained = lora_weights(model)
    assert trained and any(float(v.abs().max()) > 0 for k, v in trained.items() if "lora_B" in k)

    image = render_with_lora(StableDiffusionXLPipeline, pipe_dir, model, steps=4)
    assert rms(pixels(model / "samples" / "step-000012" / "prompt0-seed0.png"), image) < 1.0
    base = pixels(model / "samples" / "step-000000" / "prompt0-seed0.png")
    assert rms(base, image) > 0.0  # the LoRA changed what the pipeline renders
