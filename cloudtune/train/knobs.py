"""The training knobs' TrainingArguments keywords: `hyperparameters.optimizer`, `lr_scheduler`, `warmup_steps`,
`max_grad_norm`, and DeepSpeed for `distributed: deepspeed-zero2|zero3` (its config: cloudtune.contracts.deepspeed);
`warmup_warning` for a warmup the run's length (known once training begins) leaves no room after.

The plan refuses what this device cannot run (cloudtune.preflight.knobs) and what the job's image lacks
(cloudtune.kit.planning); the job says it again in one line, for a job started some other way. Imports no torch at module level.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from cloudtune.contracts.deepspeed import STAGES, deepspeed_config
from cloudtune.errors import JobInputError
from cloudtune.spec.preference import CUDA_ONLY_OPTIMIZERS, TRAINER_OPTIM


def knob_arguments(train: Any, cuda: bool) -> dict[str, Any]:
    """TrainingArguments keywords of the knobs (transformers names: optim, lr_scheduler_type, warmup_steps,
    max_grad_norm, deepspeed). `warmup_steps` null -> `warmup_ratio` as a fraction (a float below 1 is a ratio of
    the total steps in transformers 5). JobInputError for a CUDA-only choice without CUDA."""
    hp = train.hyperparameters
    if hp.optimizer in CUDA_ONLY_OPTIMIZERS and not cuda:
        raise JobInputError(f"hyperparameters.optimizer {hp.optimizer}: {CUDA_ONLY_OPTIMIZERS[hp.optimizer]}, and this "
                            f"job has no CUDA GPU. To fix: use adamw_torch or adafactor, or a GPU accelerator")
    warmup = hp.warmup_steps if hp.warmup_steps is not None else min(float(hp.warmup_ratio), 0.999999)
    kwargs: dict[str, Any] = {"optim": TRAINER_OPTIM.get(hp.optimizer, hp.optimizer), "lr_scheduler_type": hp.lr_scheduler, "warmup_steps": warmup,
                              "max_grad_norm": hp.max_grad_norm}
    if train.distributed in STAGES:  # the job's image must carry deepspeed: `require_deepspeed`
        kwargs["deepspeed"] = deepspeed_config(train.distributed)
    return kwargs


def warmup_warning(warmup_steps: float, total_steps: int) -> str | None:
    """The one-line warning (for `say`: `[cloudtune] warning: ...`) when the warmup covers the whole run, so the
    learning rate never reaches `hyperparameters.learning_rate`; else None. `warmup_steps` is TrainingArguments'
    value as `knob_arguments` gives it (a float below 1 is warmup_ratio, which the spec keeps below 1, so it always
    ends within the run); `total_steps` the run's optimizer steps (the Trainer's `state.max_steps`; 0 or less:
    unknown). The spec refuses this where it knows max_steps; without it, the run's length is known only here."""
    if total_steps <= 0 or (isinstance(warmup_steps, float) and warmup_steps < 1) or warmup_steps < total_steps:
        return None
    return (f"warning: hyperparameters.warmup_steps ({int(warmup_steps)}) is not below this run's {total_steps} "
            f"optimizer steps: the whole run is warmup and the learning rate never reaches learning_rate; lower "
            f"warmup_steps below {total_steps}, or use warmup_ratio (e.g. 0.03)")


def require_deepspeed(distributed: str) -> None:
    """JobInputError (one line, exit 65) when the job's image has no `deepspeed` to import. Without CUDA, DeepSpeed
    runs on its CPU accelerator (deepspeed.accelerator.cpu_accelerator: gloo or its shared-memory collectives), which
    trains the same ZeRO stages: a local CPU job exercises the config, the engine and its checkpoints."""
    if importlib.util.find_spec("deepspeed") is None:
        raise JobInputError(f"train.distributed {distributed}: deepspeed is not installed in this job's image. To fix: "
                            "use an image that carries it (pip install deepspeed), or distributed: ddp or fsdp")


def attention_kwargs(train: Any) -> dict[str, Any]:
    """`from_pretrained` keywords of `train.attn_implementation`, `train.revision` and `train.trust_remote_code`
    (only those set away from their defaults). JobInputError (one line, exit 65) for flash_attention_2 where the
    image has no flash-attn (transformers' own error is an ImportError traceback at load)."""
    kwargs: dict[str, Any] = {}
    attn = getattr(train, "attn_implementation", "auto")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise JobInputError("train.attn_implementation flash_attention_2: flash-attn is not installed in this job's "
                            "image. To fix: use an image that carries it (pip install flash-attn), or sdpa")
    if attn != "auto":
        kwargs["attn_implementation"] = attn
    if getattr(train, "revision", None):
        kwargs["revision"] = train.revision
    if getattr(train, "trust_remote_code", False):
        kwargs["trust_remote_code"] = True
    return kwargs


__all__ = ["attention_kwargs", "knob_arguments", "warmup_warning"]
