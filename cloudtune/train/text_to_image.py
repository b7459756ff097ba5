"""The built-in text-to-image recipe: a LoRA on the UNet of a Stable Diffusion 1.x/2.x or SDXL pipeline (diffusers +
peft), trained by the shared flow's Trainer (complete-or-absent checkpoints holding the LoRA weights, optimizer,
scheduler and RNG states; resume; SIGTERM; progress and status lines; divergence checks).

Data: `cloudtune.data.images` (imagefolder metadata, .txt captions or one instance prompt), aspect-ratio buckets,
flips, crops and caption dropout (`cloudtune.train.image_data`). The VAE and text encoders are frozen; their
outputs are cached once per node when exact (`cloudtune.train.image_cache`). Validation samples, the validation
loss and the collapse check: `cloudtune.train.image_validation`. Outputs (diffusers' LoRA format, model card,
optional fused pipeline): `cloudtune.train.image_outputs`. Throughput is counted in images (the step line's
`tokens_per_second` field is images per second for this recipe; metrics.json has `images_per_second`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch

from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.spec.image import DEFAULT_RESOLUTION
from cloudtune.train import diffusion
from cloudtune.train.checkpoints import CheckpointStore, fault_point
from cloudtune.train.image_data import BucketBatches, load_pixels, size_ids
from cloudtune.train.logfmt import (RESUME_LOG_FORMAT, SIGTERM_EXIT_CODE, SIGTERM_LOG_FORMAT, TRAIN_DONE_LOG_FORMAT,
                                   _say)

LORA_STATE = "lora_state.safetensors"  # in each checkpoint: the trained (LoRA) parameters by name


class DiffusionLoss(torch.nn.Module):
    """The module the Trainer trains: the pipeline's UNet (with its LoRA), text encoders and VAE (frozen, unless the
    text encoders carry a LoRA too); `forward(**batch)` returns `{"loss": ...}` (cloudtune.train.diffusion)."""

    def __init__(self, pipe: Any, snr_gamma: float | None, noise_offset: float) -> None:
        super().__init__()
        self.unet, self.vae = pipe.unet, pipe.vae
        self.text_encoders = torch.nn.ModuleList(diffusion.text_encoders(pipe))
        self.snr_gamma, self.noise_offset = snr_gamma, noise_offset
        object.__setattr__(self, "pipe", pipe)  # not a submodule: its modules are registered above

    def embeddings(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        if "prompt_embeds" in batch:
            return batch["prompt_embeds"], batch.get("pooled_embeds")
        ids = [batch[k] for k in sorted(batch) if k.startswith("input_ids")]
        if any(p.requires_grad for p in self.text_encoders.parameters()):
            return diffusion.encode_text(self.pipe, ids)
        with torch.no_grad(), torch.autocast(device_type=ids[0].device.type, enabled=False):  # as the cache encodes
            return diffusion.encode_text(self.pipe, ids)

    def forward(self, **batch: Any) -> dict[str, Any]:
        params = batch.get("latent_params")
        if params is None:
            params = diffusion.latent_parameters(self.vae, batch["pixel_values"])
        latents = diffusion.sample_latents(self.vae, params.to(self.vae.device))
        embeds, pooled = self.embeddings(batch)
        added = None
        if pooled is not None:
            added = {"text_embeds": pooled.to(self.unet.dtype), "time_ids": batch["time_ids"].to(self.unet.dtype)}
        loss = diffusion.diffusion_loss(self.unet, self.pipe.scheduler, latents, embeds, added, self.snr_gamma,
                                        self.noise_offset)
        return {"loss": loss}

    def trained_state(self) -> dict[str, Any]:
        """The trained parameters (the LoRA), by name, on the CPU."""
        return {n: p.detach().to("cpu").contiguous() for n, p in self.named_parameters() if p.requires_grad}


class ImageCollator:
    """Builds a batch from one `BucketBatches` item: pixels (or cached latent parameters), token ids (or cached
    embeddings), SDXL's size ids, and `ct_num_tokens` (the images counted as the throughput)."""

    def __init__(self, pipe: Any, cache: Any, sdxl: bool) -> None:
        self.pipe, self.cache, self.sdxl = pipe, cache, sdxl

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [row for item in items for row in item["ct_rows"]]
        batch: dict[str, Any] = {"ct_num_tokens": torch.tensor(len(rows))}
        crops: list[tuple[int, int]] = []
        if self.cache is not None and self.cache.latents:
            batch["latent_params"] = torch.stack([self.cache.latent(ex.index, c.flip) for ex, c in rows])
            crops = [self.cache.crop(ex.index) for ex, _ in rows]
        else:
            pixels = [load_pixels(ex.record.path, ex.bucket, (c.crop_x, c.crop_y), c.flip) for ex, c in rows]
            batch["pixel_values"] = torch.stack([p for p, _ in pixels])
            crops = [crop for _, crop in pixels]
        captions = ["" if c.drop_caption else ex.record.caption for ex, c in rows]
        if self.cache is not None and self.cache.text:
            embeds = [self.cache.text_embedding(text) for text in captions]
            batch["prompt_embeds"] = torch.stack([e for e, _ in embeds])
            if self.sdxl:
                batch["pooled_embeds"] = torch.stack([p for _, p in embeds])
        else:
            for i, ids in enumerate(diffusion.tokenize(self.pipe, captions)):
                batch[f"input_ids_{i}"] = ids
        if self.sdxl:
            batch["time_ids"] = torch.tensor([size_ids(ex, crop) for (ex, _), crop in zip(rows, crops)],
                                             dtype=torch.float32)
        return batch


def image_trainer_class(base: type) -> type:
    """`base` (the shared flow's Trainer) whose checkpoints hold the LoRA weights only (LORA_STATE), and whose
    step counts images as its throughput."""
    from safetensors.torch import load_file, save_file

    class ImageTrainer(base):  # type: ignore[misc, valid-type]
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if self.args.should_save:
                out = Path(output_dir or self.args.output_dir)
                out.mkdir(parents=True, exist_ok=True)
                module = self.accelerator.unwrap_model(self.model)
                save_file(module.trained_state(), str(out / LORA_STATE))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            module = self.accelerator.unwrap_model(model or self.model)
            state = load_file(str(Path(resume_from_checkpoint) / LORA_STATE))
            missing = set(module.trained_state()) - set(state)
            if missing:
                raise JobInputError(f"checkpoint {resume_from_checkpoint} lacks {len(missing)} LoRA tensors (e.g. "
                                    f"{sorted(missing)[0]}): it was written by another LoRA setup; start a new job "
                                    f"or restore the spec's train.lora")
            named = dict(module.named_parameters())
            with torch.no_grad():
                for name, value in state.items():
                    named[name].copy_(value.to(named[name].device, named[name].dtype))

    return ImageTrainer


def _epoch_callback(dataset: BucketBatches) -> Any:
    from transformers import TrainerCallback

    class EpochCallback(TrainerCallback):
        """Tells the dataset which epoch it serves (its random choices depend on it, not on the global RNG)."""

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            dataset.epoch = int((state.epoch or 0.0) + 1e-6)

    return EpochCallback()


def _dtype(precision: str) -> Any:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def check_cuda_only(train: TrainSpec, device: str) -> None:
    """8-bit AdamW and NF4 base weights run on CUDA GPUs only (bitsandbytes): the plan refuses them first
    (cloudtune.preflight.images); this is the job's own check."""
    if device == "cuda":
        return
    if train.hyperparameters.optimizer == "adamw_8bit":
        raise JobInputError(f"hyperparameters.optimizer adamw_8bit needs a CUDA GPU (bitsandbytes); this job runs on "
                            f"{device}. To fix: use optimizer: adamw")
    if train.lora is not None and train.lora.quantize is not None:
        raise JobInputError(f"lora.quantize: 4bit (NF4 base weights) needs a CUDA GPU (bitsandbytes); this job runs on "
                            f"{device}. To fix: remove quantize")


def load_base(ctx: RuntimeContext, train: TrainSpec, dtype: Any) -> tuple[Any, str, bool]:
    """The base pipeline (a LoRA dir of an earlier job: its base with that LoRA fused in), the name it goes by, and
    whether a LoRA was fused in (the new LoRA then adapts weights that exist nowhere else)."""
    from cloudtune.train.causal_lm import base_model_source, model_shown, resolve_model_source

    source, shown = resolve_model_source(ctx, train.model), model_shown(ctx, train)
    nf4 = train.lora is not None and train.lora.quantize is not None
    if not diffusion.is_lora_dir(source):
        return diffusion.load_pipeline(source, shown, dtype, nf4), shown, False
    base = base_model_source(ctx, train)
    base_source, base_shown = base if base else (diffusion.lora_base(source), None)
    if not base_source:
        raise JobInputError(f"train.model {shown} is a LoRA without a recorded base pipeline. To fix: set "
                            f"train.base_model to the pipeline it was trained on")
    pipe = diffusion.load_pipeline(base_source, base_shown or base_source, dtype, nf4)
    pipe.load_lora_weights(source)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    _say(f"LoRA {shown} fused into its base {base_shown or base_source}")
    return pipe, f"{base_shown or base_source} + {shown}", True


def run_text_to_image(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Train a LoRA on `train.model`'s UNet from the images of `ctx.inputs[train.data.train]`; write the LoRA
    (diffusers' format), samples, metrics.json and the model card to ctx.model_dir. Returns the metrics."""
    from transformers import set_seed

    from cloudtune.train.causal_lm import _quiet_transformers, device_type
    from cloudtune.train.image_setup import prepare
    from cloudtune.train.trainer import device_precision

    _quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)
    device = device_type()
    check_cuda_only(train, device)
    precision = device_precision(hp.precision)
    pipe, base_name, fused = load_base(ctx, train, _dtype(precision) if device == "cuda" else torch.float32)
    if fused and train.lora is not None and not train.lora.merge:
        _say("LoRA on a fused LoRA pipeline: the model dir gets the fused pipeline too (as lora.merge: true; the new "
             "LoRA goes to lora/), so the output loads on its own")
        train = train.model_copy(update={"lora": train.lora.model_copy(update={"merge": True})})
    setup = prepare(ctx, train, pipe, precision)
    return _train(ctx, train, checkpoint, setup, precision, base_name)


def _train(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec, setup: Any, precision: str,
           base_name: str) -> dict[str, float]:
    """The shared flow around the image Trainer: resume, SIGTERM (exit 143 with a checkpoint), divergence (exit
    66), then the outputs."""
    from cloudtune.train import health as ct_health
    from cloudtune.train.causal_lm import _agreed_resume, _stop_diverged
    from cloudtune.train.image_outputs import write_image_outputs
    from cloudtune.train.image_setup import build_trainer

    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=_say)
    trainer, (log_cb, sigterm_cb, validation) = build_trainer(ctx, train, checkpoint, setup, store, precision)
    resume = _agreed_resume(store)
    if resume is not None:
        _say(RESUME_LOG_FORMAT.format(path=resume.path, step=resume.step))
        trainer.ct_last_saved_step = resume.step
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, sigterm_cb.handler) if in_main_thread else None
    try:
        try:
            output = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        except ct_health.TrainingDiverged as exc:
            _stop_diverged(ctx, train, store, exc, precision)
        if sigterm_cb.agreed(trainer.args.device):
            if trainer.ct_last_saved_step != trainer.state.global_step:
                trainer._save_checkpoint(trainer.model, trial=None)
            _say(SIGTERM_LOG_FORMAT.format(step=trainer.state.global_step))
            fault_point("exit", trainer.state.global_step)
            raise SystemExit(SIGTERM_EXIT_CODE)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    metrics = _metrics(trainer, output, log_cb, setup)
    _say(TRAIN_DONE_LOG_FORMAT.format(**metrics))
    if validation is not None:
        metrics.update(validation.final(trainer))
    write_image_outputs(ctx, train, trainer, setup, base_name, metrics, precision)
    return metrics


def _metrics(trainer: Any, output: Any, log_cb: Any, setup: Any) -> dict[str, float]:
    runtime = float(output.metrics.get("train_runtime", 0.0))
    images = int(trainer.state.num_input_tokens_seen or 0) - log_cb.tokens_at_begin
    return {"train_loss": float(output.training_loss), "train_runtime_s": runtime,
            "tokens_per_second": images / runtime if runtime > 0 else 0.0,
            "images_per_second": images / runtime if runtime > 0 else 0.0,
            "global_step": int(trainer.state.global_step), "train_examples": len(setup.examples)}


__all__ = ["DiffusionLoss", "ImageCollator", "image_trainer_class", "run_text_to_image", "DEFAULT_RESOLUTION"]
