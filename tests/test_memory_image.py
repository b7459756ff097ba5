"""The text-to-image memory estimate (cloudtune.memory_image) and its plan-time check (cloudtune.memory_check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.errors import UnsupportedSpec
from cloudtune.memory_check import plan_memory
from cloudtune.memory_image import FAMILIES, estimate_image, family_of
from cloudtune.spec import validate_spec


def spec(tmp: Path, accelerator: str = "L4:1", model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5", **hp):
    return validate_spec({"name": "img", "inputs": {"train": "s3://b/images/"},
                          "resources": {"accelerator": accelerator},
                          "train": {"task": "text-to-image", "model": model, "lora": {"r": 16, "alpha": 16},
                                    "hyperparameters": {"resolution": 512, "batch_size": 4} | hp}}, base_dir=tmp)


def test_the_parts_add_up_for_sd15_in_bf16(tmp_path: Path) -> None:
    sd1 = FAMILIES["sd1"]
    est = estimate_image(sd1, spec(tmp_path).train, "bf16", False)
    lora = sd1.lora_per_rank * 16
    assert est.trainable_params == lora
    assert est.weights == sd1.unet * 2 + sd1.text * 2 + sd1.vae * 4 + lora * 4
    assert est.gradients == lora * 4 and est.optimizer == lora * 8
    assert est.activations == sd1.act_bytes_per_latent * 64 * 64 * 4 * 0.5  # latent 64x64, batch 4, 16-bit
    eight_bit = estimate_image(sd1, spec(tmp_path, optimizer="adamw_8bit").train, "bf16", False)
    assert eight_bit.optimizer == est.optimizer / 4
    nf4 = estimate_image(sd1, validate_spec({"name": "i", "inputs": {"train": "s3://b/i/"}, "resources": {
        "accelerator": "L4:1"}, "train": {"task": "text-to-image", "model": "x", "lora": {"r": 16, "quantize": "4bit"}}},
        base_dir=tmp_path).train, "bf16", False)
    assert nf4.weights < est.weights - sd1.unet
    assert estimate_image(sd1, spec(tmp_path).train, "bf16", True).activations < est.activations / 5


def test_families_from_names_and_pipeline_configs(tmp_path: Path) -> None:
    assert family_of("stable-diffusion-v1-5/stable-diffusion-v1-5", None) is FAMILIES["sd1"]
    assert family_of("stabilityai/stable-diffusion-2-1", None) is FAMILIES["sd2"]
    assert family_of("stabilityai/stable-diffusion-xl-base-1.0", None) is None  # SDXL: not estimated yet
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"cross_attention_dim": 1024}')
    assert family_of("./pipe", tmp_path) is FAMILIES["sd2"]


def test_plan_shows_the_estimate_and_refuses_what_cannot_fit(tmp_path: Path) -> None:
    fits = plan_memory(spec(tmp_path), "aws", "ml.g6.xlarge")
    assert fits is not None and fits["model"] == "Stable Diffusion 1.x" and fits["estimate"]["total"] < 24 * 1024**3
    with pytest.raises(UnsupportedSpec, match="needs about .* per GPU, over the 16 GB of one T4") as exc:
        plan_memory(spec(tmp_path, accelerator="T4:1", resolution=1024, batch_size=64,
                         gradient_checkpointing=False), "aws", "ml.g4dn.xlarge")
    assert "gradient_checkpointing: true" in exc.value.fix
    unknown = plan_memory(spec(tmp_path, model="stabilityai/stable-diffusion-xl-base-1.0"), "aws", "ml.g6.xlarge")
    assert unknown is not None and unknown["estimate"] is None


@pytest.mark.parametrize("batch, requested, expected", [(24, None, True), (1, None, False), (24, False, False),
                                                         (1, True, True)])
def test_the_job_decides_null_checkpointing_as_the_plan_estimated_it(batch: int, requested: bool | None,
                                                                    expected: bool) -> None:
    """SD 1.5 at 512 px on a 16 GB GPU: null turns gradient checkpointing on in the job exactly when the plan's
    estimate needed it (the plan shows the estimate with it; a job without it would run out of memory)."""
    from cloudtune.memory_image import FAMILIES, family_of_unet, wants_image_checkpointing
    from cloudtune.spec import TrainSpec

    train = TrainSpec.model_validate({"task": "text-to-image", "model": "m", "lora": {"r": 16}, "hyperparameters": {
        "resolution": 512, "batch_size": batch, "gradient_checkpointing": requested}})
    family = family_of_unet({"cross_attention_dim": 768})
    assert family == FAMILIES["sd1"]
    assert wants_image_checkpointing(family, train, "fp16", 16 * 10**9) is expected
    assert wants_image_checkpointing(family, train, "fp16", None) is bool(requested)  # CPU: as given, else off
    assert family_of_unet({"cross_attention_dim": 2048, "addition_embed_type": "text_time"}) is None  # SDXL
