"""The text-to-image part of the job spec: `train.validation` and the rules that tie the image options to
`task: text-to-image` (pure pydantic; no torch, no diffusers).

The image options live where users of diffusers' scripts look for them: `train.hyperparameters.resolution`,
`snr_gamma`, `noise_offset`, `optimizer`, `cache_latents`; `train.data.instance_prompt`, `caption_dropout`,
`random_flip`, `center_crop`, `bucketing`; `train.lora.text_encoders`; `train.validation`.
"""

from __future__ import annotations

from typing import Any

from typing import ClassVar

from pydantic import Field, field_validator

from cloudtune.spec.base import TrainPart

IMAGE_TASK = "text-to-image"
DEFAULT_RESOLUTION = 512  # SD 1.x's training side; SDXL's is 1024 (set train.hyperparameters.resolution)
OPTIMIZERS = ("adamw", "adamw_8bit")


class ValidationSpec(TrainPart):
    """Samples generated with fixed seeds at step 0 (the base model) and every `every_steps` steps: images for
    text-to-image, WAV clips of `seconds` for text-to-audio (which reads prompts, every_steps, seeds, seconds,
    collapse, collapse_ratio and, when set, guidance_scale)."""

    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("seconds",)
    _OMIT_WHEN_UNSET: ClassVar[tuple[str, ...]] = ("steps", "guidance_scale", "loss_examples", "seconds")
    prompts: list[str] = Field(..., min_length=1, max_length=64, description="prompts rendered at each evaluation")
    every_steps: int = Field(100, ge=1, le=2**31 - 1, description="render (and compute the validation loss) every N "
                             "optimizer steps, at step 0 (the base model) and at the end")
    seeds: list[int] = Field([0], min_length=1, max_length=16, description="one image per prompt and seed (fixed "
                             "generators: the same noise at every evaluation)")
    steps: int = Field(25, ge=1, le=1000, description="denoising steps per sample (the pipeline's own scheduler)")
    guidance_scale: float = Field(7.5, ge=0, le=100, description="classifier-free guidance scale of the samples")
    collapse: bool = Field(True, description="warn when the samples of different prompts/seeds become near-identical: "
                           "their mean pairwise distance falls below collapse_ratio x the base model's")
    collapse_ratio: float = Field(0.25, gt=0, lt=1, description="see collapse")
    loss_examples: int = Field(8, ge=1, le=4096, description="examples of the eval input (else the first training "
                               "examples) in the validation loss, at fixed timesteps and noise")
    seconds: float = Field(5.0, gt=0, le=120, description="text-to-audio: length of each sample in seconds")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        if any(not p.strip() for p in v):
            raise ValueError("validation.prompts holds an empty prompt\nTo fix: write the text to render, e.g. 'a red square'")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 or s > 2**63 - 1 for s in v):
            raise ValueError("validation.seeds are 0 .. 2**63-1 (torch.Generator seeds)\nTo fix: give seeds in that range, e.g. [0, 1]")
        return v


def check_image_task(train: Any) -> None:
    """ValueError (one sentence with the fix) for what `task: text-to-image` cannot take, or image options given to a
    text task. `train` is a TrainSpec (duck-typed: this module sits below it)."""
    data, hp = train.data, train.hyperparameters
    image_data = [n for n in ("instance_prompt", "caption_dropout", "random_flip", "center_crop", "bucketing")
                  if n in data.model_fields_set]
    image_hp = [n for n in ("resolution", "snr_gamma", "noise_offset", "cache_latents") if n in hp.model_fields_set]
    if train.task != IMAGE_TASK:
        given = [f"data.{n}" for n in image_data] + [f"hyperparameters.{n}" for n in image_hp]
        if train.validation is not None and train.task != "text-to-audio":  # the audio recipe shares the section
            given.append("validation")
        if train.lora is not None and train.lora.text_encoders:
            given.append("lora.text_encoders")
        if given:
            raise ValueError(f"train.{given[0]} applies to task text-to-image only (task is {train.task})\n"
                             f"To fix: remove it, or set task: text-to-image")
        return
    text_only = [n for n in ("format", "chat_template", "labels", "packing", "streaming", "label_field")
                 if n in data.model_fields_set]
    if text_only:
        raise ValueError(f"train.data.{text_only[0]} applies to the text tasks; text-to-image reads images with "
                         f"captions (train.data.text_field) or one instance_prompt\nTo fix: remove it")
    if train.lora is None:
        raise ValueError("task text-to-image trains a LoRA on the denoiser (full fine-tuning is not offered)\n"
                         "To fix: add `lora: {r: 16, alpha: 16}` under train")
    if train.distributed == "fsdp":
        raise ValueError("task text-to-image trains with distributed: ddp (a LoRA on a UNet: nothing to shard)\n"
                         "To fix: remove `distributed: fsdp`")
    if train.keep_best or hp.early_stopping_patience is not None or hp.eval_every is not None:
        raise ValueError("task text-to-image evaluates on train.validation.every_steps (samples + validation loss)\n"
                         "To fix: remove keep_best / eval_every / early_stopping_patience and set validation.every_steps")
    if hp.resolution is not None and hp.resolution % 8:
        raise ValueError(f"hyperparameters.resolution {hp.resolution} must be a multiple of 8 (the VAE's downsampling "
                         f"factor)\nTo fix: use e.g. {max(8, hp.resolution // 8 * 8)}")
