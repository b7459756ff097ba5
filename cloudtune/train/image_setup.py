"""Setting up a text-to-image run: the data (records, buckets, batches), the LoRA, the cache, the loss module and
the Trainer with its callbacks (the shared flow's log, SIGTERM and health callbacks, plus the epoch and validation
callbacks of this recipe)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloudtune.contracts.logfmt import say
from cloudtune.data.images import image_records
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.spec.image import DEFAULT_RESOLUTION
from cloudtune.train import diffusion
from cloudtune.train import health as ct_health
from cloudtune.train.arguments import training_arguments
from cloudtune.train.callbacks import EpochCallback, HealthCallback, LogCallback, SigtermCallback
from cloudtune.train.image_data import BucketBatches, Example, group_batches, make_examples
from cloudtune.train.image_trainer import DiffusionLoss, ImageCollator, ImageTrainer
from cloudtune.train.models import input_source, model_shown


@dataclass
class ImageSetup:
    """What a text-to-image run trains with."""

    pipe: Any
    model: Any  # cloudtune.train.image_trainer.DiffusionLoss
    dataset: BucketBatches
    collator: Any
    examples: list[Example]
    resolution: int
    loss_examples: list[Example]
    cache_note: str | None


def _examples(ctx: RuntimeContext, train: TrainSpec, name: str, resolution: int) -> list[Example]:

    data = train.data
    records = image_records(Path(ctx.inputs[name]), data.text_field, data.instance_prompt,
                            input_source(ctx, name) or f"input {name!r}")
    return make_examples(records, resolution, data.bucketing)


def _device() -> Any:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def image_checkpointing(train: TrainSpec, pipe: Any, precision: str) -> bool:
    """Gradient checkpointing for this run (cloudtune.memory_image.wants_image_checkpointing: null = on when the
    UNet's activations would not fit this GPU without it, the decision the plan's memory estimate made); says so
    when null turned it on."""
    from cloudtune.memory_image import family_of_unet, wants_image_checkpointing
    from cloudtune.train.loading import device_memory

    family = family_of_unet(dict(pipe.unet.config))
    on = wants_image_checkpointing(family, train, precision, device_memory(_device().type))
    if on and train.hyperparameters.gradient_checkpointing is None:
        say("gradient checkpointing: on (null: the UNet's activations would not fit this GPU without it)")
    return on


def prepare(ctx: RuntimeContext, train: TrainSpec, pipe: Any, precision: str) -> ImageSetup:
    """Records and buckets, the LoRA (its weights in float32), gradient checkpointing, the cache, the batches."""
    from cloudtune.train.image_cache import build_cache, cache_key, cache_plan

    data, hp, lora = train.data, train.hyperparameters, train.lora
    assert lora is not None  # the spec requires it for text-to-image
    resolution = hp.resolution or DEFAULT_RESOLUTION
    examples = _examples(ctx, train, data.train, resolution)
    buckets = sorted({ex.bucket for ex in examples})
    say(f"data: {len(examples)} training images in {len(buckets)} bucket{'s' * (len(buckets) != 1)} "
         f"({', '.join(f'{w}x{h}' for w, h in buckets[:6])}{', ...' if len(buckets) > 6 else ''})")
    trained = diffusion.add_lora(pipe, lora, lora.text_encoders)
    for module in trained:
        for param in module.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    count = sum(p.numel() for m in trained for p in m.parameters() if p.requires_grad)
    say(f"LoRA r={lora.r} alpha={lora.alpha} on the UNet{' and text encoders' if lora.text_encoders else ''}: "
         f"{count:,} trained parameters")
    if image_checkpointing(train, pipe, precision):
        pipe.unet.enable_gradient_checkpointing()
        if lora.text_encoders:
            for te in diffusion.text_encoders(pipe):
                te.gradient_checkpointing_enable()
    pipe.to(_device())
    latents, text, note = cache_plan(train)
    if note:
        say(note)
    cache = None
    if latents or text:

        captions = [ex.record.caption for ex in examples]
        key = cache_key(examples, model_shown(ctx, train), data.random_flip, captions)
        node_leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
        cache = build_cache(pipe, examples, data.random_flip, captions, latents, text,
                            Path(ctx.checkpoint_dir) / "cache", key, node_leader, say)
    dataset = BucketBatches(examples, group_batches(examples, hp.batch_size, hp.seed), hp.seed, data.random_flip,
                            data.center_crop, data.caption_dropout)
    loss_examples = examples
    if data.eval is not None and data.eval in ctx.inputs:
        loss_examples = _examples(ctx, train, data.eval, resolution)
    count = train.validation.loss_examples if train.validation is not None else 0
    return ImageSetup(pipe, DiffusionLoss(pipe, hp.snr_gamma, hp.noise_offset), dataset,
                      ImageCollator(pipe, cache, diffusion.is_sdxl(pipe)), examples, resolution,
                      loss_examples[:count], note)


def build_trainer(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec, setup: ImageSetup, store: Any,
                  precision: str) -> tuple[Any, tuple[Any, Any, Any]]:
    """The image Trainer (checkpoints hold the LoRA) with the shared callbacks (log, SIGTERM, health) and this
    recipe's (epoch, validation). Returns (trainer, (log callback, SIGTERM callback, validation callback or None)).
    The Trainer's per-device batch is one `BucketBatches` item (up to batch_size images of one bucket)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cloudtune.train.image_validation import Validator, validation_callback

    hp = train.hyperparameters
    per_item = train.model_copy(update={"hyperparameters": hp.model_copy(
        update={"batch_size": 1, "gradient_checkpointing": False})})
    args = training_arguments(ctx, per_item, checkpoint, precision=precision, loss_only=True, model=None)
    if hp.optimizer == "adamw_8bit":
        from transformers.training_args import OptimizerNames

        args.optim = OptimizerNames.ADAMW_BNB
    spec = train.health
    health = ct_health.HealthState(
        ct_health.SpikeDetector(spec.spike_window, spec.spike_factor, spec.spike_mads) if spec.divergence else None,
        ct_health.OverfitTracker(spec.patience) if spec.overfitting and train.validation is not None else None,
        None, False, store)
    log_cb, sigterm_cb = LogCallback(), SigtermCallback()
    health_cb = HealthCallback(health)
    validation = None
    if train.validation is not None:
        validator = Validator(train.validation, setup.pipe, setup.resolution, Path(ctx.checkpoint_dir) / "samples",
                              setup.loss_examples, hp.snr_gamma)
        validation = validation_callback(validator, health, train.validation.every_steps)
    callbacks = [log_cb, sigterm_cb, health_cb, EpochCallback(setup.dataset)] + ([validation] if validation else [])
    trainer = ImageTrainer(
        model=setup.model, args=args, train_dataset=setup.dataset, data_collator=setup.collator, callbacks=callbacks)
    trainer.ct_store = store
    trainer.ct_last_saved_step = None
    health_cb.attach(trainer)
    if validation is not None:
        validation.attach(trainer, log_cb.report)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, (log_cb, sigterm_cb, validation)
