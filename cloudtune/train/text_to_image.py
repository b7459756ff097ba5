"""The built-in text-to-image recipe: a LoRA on the UNet of a Stable Diffusion 1.x/2.x or SDXL pipeline (diffusers +
peft), trained by the shared flow's Trainer (`cloudtune.train.image_trainer.ImageTrainer`: complete-or-absent checkpoints holding the LoRA weights, optimizer,
scheduler and RNG states; resume; SIGTERM; progress and status lines; divergence checks).

Data: `cloudtune.data.images` (imagefolder metadata, .txt captions or one instance prompt), aspect-ratio buckets,
flips, crops and caption dropout (`cloudtune.train.image_data`). The VAE and text encoders are frozen; their
outputs are cached once per node when exact (`cloudtune.train.image_cache`). Validation samples, the validation
loss and the collapse check: `cloudtune.train.image_validation`. Outputs (diffusers' LoRA format, model card,
optional fused pipeline): `cloudtune.train.image_outputs`. Throughput is counted in images (the step line's
`tokens_per_second` field is images per second for this recipe; metrics.json has `images_per_second`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cloudtune.contracts.logfmt import RESUME_LOG_FORMAT, TRAIN_DONE_LOG_FORMAT, say
from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.spec.image import DEFAULT_RESOLUTION
from cloudtune.train import diffusion
from cloudtune.train.arguments import device_precision
from cloudtune.train.checkpoints import CheckpointStore
from cloudtune.train.flow import agreed_resume, device_type, quiet_transformers, train_or_stop
from cloudtune.train.image_outputs import write_image_outputs
from cloudtune.train.image_setup import build_trainer, prepare
from cloudtune.train.models import base_model_source, model_shown, resolve_model_source

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
    say(f"LoRA {shown} fused into its base {base_shown or base_source}")
    return pipe, f"{base_shown or base_source} + {shown}", True


def run_text_to_image(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Train a LoRA on `train.model`'s UNet from the images of `ctx.inputs[train.data.train]`; write the LoRA
    (diffusers' format), samples, metrics.json and the model card to ctx.model_dir. Returns the metrics."""
    from transformers import set_seed

    quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)
    device = device_type()
    check_cuda_only(train, device)
    precision = device_precision(hp.precision)
    pipe, base_name, fused = load_base(ctx, train, _dtype(precision) if device == "cuda" else torch.float32)
    if fused and train.lora is not None and not train.lora.merge:
        say("LoRA on a fused LoRA pipeline: the model dir gets the fused pipeline too (as lora.merge: true; the new "
             "LoRA goes to lora/), so the output loads on its own")
        train = train.model_copy(update={"lora": train.lora.model_copy(update={"merge": True})})
    setup = prepare(ctx, train, pipe, precision)
    return _train(ctx, train, checkpoint, setup, precision, base_name)


def _train(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec, setup: Any, precision: str,
           base_name: str) -> dict[str, float]:
    """The shared flow around the image Trainer: resume, SIGTERM (exit 143 with a checkpoint), divergence (exit
    66), then the outputs."""
    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=say)
    trainer, (log_cb, sigterm_cb, validation) = build_trainer(ctx, train, checkpoint, setup, store, precision)
    resume = agreed_resume(store)
    if resume is not None:
        say(RESUME_LOG_FORMAT.format(path=resume.path, step=resume.step))
        trainer.ct_last_saved_step = resume.step
    output = train_or_stop(ctx, train, trainer, sigterm_cb, resume, precision)
    metrics = _metrics(trainer, output, log_cb, setup)
    say(TRAIN_DONE_LOG_FORMAT.format(**metrics))
    if validation is not None:
        metrics.update(validation.final(trainer))
    write_image_outputs(ctx, train, trainer, setup, base_name, metrics, precision)
    return metrics


def _metrics(trainer: Any, output: Any, log_cb: Any, setup: Any) -> dict[str, float]:
    runtime, per_second = log_cb.whole_run(float(output.metrics.get("train_runtime", 0.0)), trainer.state)
    return {"train_loss": float(output.training_loss), "train_runtime_s": runtime,
            "tokens_per_second": per_second, "images_per_second": per_second,
            "global_step": int(trainer.state.global_step), "train_examples": len(setup.examples)}


__all__ = ["run_text_to_image", "DEFAULT_RESOLUTION"]
