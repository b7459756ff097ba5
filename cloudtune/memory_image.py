"""Training memory per GPU of a text-to-image LoRA job (pure arithmetic, no torch): the frozen pipeline's weights,
the LoRA with its gradients and optimizer states, and the UNet's activations at the latent size.

Facts and sources:

* Parameter counts of the UNet families' parts, from the released checkpoints' safetensors (diffusers layouts):
  SD 1.x UNet 859,520,964, CLIP ViT-L/14 text encoder 123,060,480, VAE 83,653,863; SD 2.x UNet 865,910,724,
  OpenCLIP ViT-H/14 text encoder 340,387,840; SDXL UNet 2,567,463,684, its second text encoder (OpenCLIP
  ViT-bigG/14 with projection) 694,659,840. A local pipeline dir is read instead where its safetensors headers are
  there (`cloudtune.memory.safetensors_shapes`).
* Bytes per parameter: frozen weights 2 (bf16/fp16 on a GPU) or 4 (fp32), the UNet 0.516 under NF4 (4.127 bits,
  QLoRA §3); the VAE stays in fp32 (the recipe encodes in fp32: cloudtune.train.diffusion.latent_parameters);
  LoRA parameters 16 (fp32 weight, gradient, AdamW's two moments) or 10 with 8-bit AdamW (two 1-byte moments).
* LoRA size per rank for the default targets (the UNet's to_q/to_k/to_v/to_out.0): 199,296 for SD 1.x, counted on
  the adapter peft builds on the SD 1.x UNet (797,184 at r 4).
* Activations: bytes autograd saves in the UNet's forward per latent position (latent side = pixels / 8) per
  image, in fp32: 387,530, the slope between 16x16 (107,184,224 bytes) and 24x24 latents (231,191,384 bytes) of
  the SD 1.x UNet built from its config with that LoRA, measured on CPU with
  `torch.autograd.graph.saved_tensors_hooks` (parameters excluded; 2026-12-07); half of that in 16-bit autocast;
  gradient checkpointing keeps `CHECKPOINTED_SHARE` of it (measured the same way at 16x16). SD 2.x is taken to be
  the same (the same UNet channels); SDXL is not estimated yet (unknown: nothing refused).

Not counted, as for text (cloudtune.memory): the CUDA context and workspaces, fragmentation, the cache of latents
(on the CPU), the validation pipeline's inference activations (smaller than training's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1024**3


@dataclass(frozen=True)
class Family:
    """A UNet family's sizes."""

    name: str
    unet: int
    text: int
    vae: int
    lora_per_rank: int
    act_bytes_per_latent: int  # fp32, one image, no checkpointing


FAMILIES: dict[str, Family] = {
    "sd1": Family("Stable Diffusion 1.x", 859_520_964, 123_060_480, 83_653_863, 199_296, 387_530),
    # the SD 1.x UNet's channels with 1024-wide cross attention: its to_k/to_v LoRA inputs are 256 wider
    "sd2": Family("Stable Diffusion 2.x", 865_910_724, 340_387_840, 83_653_863, 199_296 + 16 * 2 * 256, 387_530),
}
CHECKPOINTED_SHARE = 0.176  # 18,903,552 of 107,184,224 bytes at 16x16 (the SD 1.x UNet, checkpointing on)
TEXT_LORA_PER_RANK = 2 * 12 * 4 * 768  # CLIP ViT-L: 12 layers x q/k/v/out (768 -> 768) x (in + out) per rank
CROSS_ATTENTION_DIMS = {768: "sd1", 1024: "sd2"}


def family_of(model: str, local_dir: Path | None) -> Family | None:
    """The family of a local pipeline dir (its unet/config.json's cross_attention_dim) or of a Hub id by its name;
    None when unknown (nothing estimated, nothing refused)."""
    if local_dir is not None:
        try:
            config = json.loads((local_dir / "unet" / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return family_of_unet(config)
    name = model.lower()
    if "xl" in name:
        return None  # SDXL: not estimated yet
    if "stable-diffusion-2" in name or "sd2" in name:
        return FAMILIES["sd2"]
    if "stable-diffusion-v1" in name or "sd-v1" in name or "stable-diffusion-v1-5" in name:
        return FAMILIES["sd1"]
    return None


@dataclass(frozen=True)
class ImageEstimate:
    """Bytes per GPU by part (the keys of cloudtune.memory.MemoryEstimate.to_dict, which the dry run prints)."""

    weights: float
    gradients: float
    optimizer: float
    activations_without_checkpointing: float
    activations_with_checkpointing: float
    gradient_checkpointing: bool
    trainable_params: int

    @property
    def activations(self) -> float:
        return self.activations_with_checkpointing if self.gradient_checkpointing else \
            self.activations_without_checkpointing

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {"weights": int(self.weights), "gradients": int(self.gradients), "optimizer": int(self.optimizer),
                "activations": int(self.activations), "total": int(self.total),
                "activations_without_checkpointing": int(self.activations_without_checkpointing),
                "activations_with_checkpointing": int(self.activations_with_checkpointing),
                "gradient_checkpointing": self.gradient_checkpointing, "trainable_params": self.trainable_params}


def family_of_unet(config: dict[str, Any]) -> Family | None:
    """The family of a UNet config (unet/config.json, or a loaded UNet's `config`) by its cross_attention_dim; None
    for SDXL (its text_time conditioning: not estimated yet) or an unknown dimension."""
    if config.get("addition_embed_type"):
        return None
    key = CROSS_ATTENTION_DIMS.get(config.get("cross_attention_dim"))
    return FAMILIES[key] if key else None


def wants_image_checkpointing(family: Family | None, train: Any, precision: str, device_bytes: int | None) -> bool:
    """The run-time decision for `hyperparameters.gradient_checkpointing`, as the plan's memory check
    (cloudtune.memory_check) makes it: true/false as given; null = on exactly when the estimate without it exceeds
    `device_bytes` (the GPU's memory) less cloudtune.memory.HEADROOM. Off where the family or the device memory is
    unknown (CPU, TPU, SDXL)."""
    from cloudtune.memory import HEADROOM

    requested = train.hyperparameters.gradient_checkpointing
    if requested is not None:
        return bool(requested)
    if family is None or device_bytes is None:
        return False
    return estimate_image(family, train, precision, False).total > device_bytes * (1 - HEADROOM)


def estimate_image(family: Family, train: Any, precision: str, checkpointing: bool) -> ImageEstimate:
    """The estimate for `train` (a text-to-image TrainSpec) in `precision` (bf16, fp16 or fp32)."""
    hp, lora = train.hyperparameters, train.lora
    half = precision in ("bf16", "fp16")
    frozen = 2 if half else 4
    unet_bytes = 0.516 if (lora is not None and lora.quantize) else frozen
    trained = family.lora_per_rank * (lora.r if lora is not None else 16)
    if lora is not None and lora.text_encoders:
        trained += TEXT_LORA_PER_RANK * lora.r
    weights = family.unet * unet_bytes + family.text * frozen + family.vae * 4 + trained * 4
    moments = 2 if hp.optimizer == "adamw_8bit" else 8
    side = (hp.resolution or 512) // 8
    act = family.act_bytes_per_latent * side * side * hp.batch_size * (0.5 if half else 1.0)
    return ImageEstimate(weights, trained * 4, trained * moments, act, act * CHECKPOINTED_SHARE, checkpointing,
                         trained)
