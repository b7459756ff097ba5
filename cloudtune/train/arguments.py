"""Training arguments from the spec: precision, FSDP wrapping, activation checkpointing, where metrics are reported
(`training_arguments` builds the `transformers.TrainingArguments` every recipe trains with)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cloudtune.catalog.precision import BF16_MIN_CAPABILITY
from cloudtune.contracts.deepspeed import STAGES
from cloudtune.contracts.logfmt import LOGGING_STEPS, say
from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.runtime.xla import xla_device_type
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.fsdp import fsdp_settings
from cloudtune.train.knobs import knob_arguments, require_deepspeed
from cloudtune.train.xla import xla_precision, xla_training_kwargs


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """`auto`: bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPU. fp16 needs a GPU."""
    if requested == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if requested == "fp16" and not cuda:
        raise JobInputError("hyperparameters.precision fp16 needs a CUDA GPU (mixed precision with a loss scaler); "
                         "on CPU use fp32 (or bf16), or leave precision: auto")
    if requested == "bf16" and cuda and not bf16_supported:
        raise JobInputError("hyperparameters.precision bf16 is not supported by this GPU (pre-Ampere); use fp16 or auto")
    return requested


def device_precision(requested: str) -> str:
    """The precision to train in on this process's device (PyTorch/XLA: see cloudtune.train.xla.xla_precision)."""
    xla = xla_device_type()
    if xla is not None:
        return xla_precision(requested, xla)
    import torch

    return resolve_precision(requested, torch.cuda.is_available(), cuda_bf16())


def cuda_bf16() -> bool:
    """Whether this process's CUDA GPU trains in bf16, by its compute capability (8.0+, the catalog's rule:
    cloudtune.catalog.precision). Not `torch.cuda.is_bf16_supported()`, which on torch >= 2.3 counts emulation."""
    import torch

    return bool(torch.cuda.is_available() and tuple(torch.cuda.get_device_capability()) >= BF16_MIN_CAPABILITY)


def checkpointing_arguments(arguments_class: Any, on: bool) -> dict[str, Any]:
    """TrainingArguments keywords turning activation (gradient) checkpointing on or off. transformers 5.23 added
    `activation_checkpointing` as the new name of `gradient_checkpointing` (read from the wheels' training_args.py);
    the Python 3.10 images' locks hold older releases (5.20 is the last for Python 3.10), so the name used is the one
    `arguments_class` has."""
    name = "activation_checkpointing" if "activation_checkpointing" in arguments_class.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def training_arguments(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec,
                        precision: str | None = None, loss_only: bool = True, model: Any = None) -> Any:
    import torch
    from transformers import TrainingArguments

    hp = train.hyperparameters
    precision = precision or device_precision(hp.precision)
    cuda = torch.cuda.is_available()
    from transformers.utils import is_torch_xla_available

    xla = xla_device_type() if is_torch_xla_available() else None
    # a TPU VM trains on its XLA device. Where torch_xla is installed, transformers' import of it sets
    # PJRT_DEVICE=CPU when nothing else was named, so XLA's CPU device is used: USE_TORCH_XLA=0 runs the plain path
    accelerated = cuda or xla is not None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_size > 1
    if xla is not None:  # one process per host; FSDP is XLA's SPMD FSDPv2 (cloudtune.train.xla)
        fsdp = xla_training_kwargs(train, model)
    else:
        fsdp = fsdp_settings(train, model, world_size) if model is not None else {}
    if train.distributed in STAGES:
        require_deepspeed(train.distributed)
        if not cuda:
            say(f"distributed: {train.distributed} without a CUDA GPU: DeepSpeed's CPU accelerator")
    if train.distributed == "fsdp" and not distributed and xla is None:
        say("distributed: fsdp in a single process: nothing to shard, training the whole model in this process")
    targets = report_targets(getattr(train, "report_to", "auto"), os.environ)
    args = TrainingArguments(
        output_dir=str(ctx.checkpoint_dir),
        num_train_epochs=float(hp.epochs),
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        data_seed=hp.seed,
        **knob_arguments(train, cuda),  # optim, lr_scheduler_type, warmup_steps, max_grad_norm, deepspeed
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        eval_strategy="steps" if hp.eval_every else "no",
        eval_steps=hp.eval_every,
        save_strategy="steps",
        save_steps=checkpoint.every_steps,
        save_total_limit=None,  # rotation is ours: never touch incomplete/corrupt checkpoints
        report_to=[t for t in targets if t != "tensorboard"] or "none",  # TensorBoard: our own event writer
        disable_tqdm=True,
        log_level="warning",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # under FSDP its own activation checkpointing does it; null (undecided): off
        **checkpointing_arguments(TrainingArguments, bool(hp.gradient_checkpointing) and not fsdp),
        use_cpu=not accelerated,  # on a CPU-only machine this is also what makes torchrun runs use DDP (gloo)
        remove_unused_columns=False,
        prediction_loss_only=loss_only,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        ddp_backend=None if (cuda or not distributed) else "gloo",
        ddp_find_unused_parameters=False if distributed and not fsdp else None,
        **fsdp,
    )
    args.ct_tensorboard_dir = str(ctx.log_dir) if "tensorboard" in targets else None  # read by LogCallback
    return args


REPORT_TARGETS = ("tensorboard", "mlflow", "wandb")
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def report_targets(report_to: Any, environ: Mapping[str, str]) -> list[str]:
    """Where training metrics go besides the log and the status file (`train.report_to`).

    `auto` (the default): TensorBoard event files (always: cloudtune writes them, no package needed) and MLflow
    when a tracking URI is set (`MLFLOW_TRACKING_URI`, as Azure ML sets it) and mlflow is installed. `none`:
    nowhere else. A list: exactly those of tensorboard, mlflow, wandb; mlflow or wandb asked for but not installed
    is a JobInputError with the fix."""
    import importlib.util

    if report_to is None or report_to == "auto":
        mlflow = bool(environ.get("MLFLOW_TRACKING_URI")) and importlib.util.find_spec("mlflow") is not None
        return ["tensorboard"] + (["mlflow"] if mlflow else [])
    if report_to == "none":
        return []
    wanted = [report_to] if isinstance(report_to, str) else [str(t) for t in report_to]
    unknown = [t for t in wanted if t not in REPORT_TARGETS]
    if unknown:
        raise JobInputError(f"train.report_to: unknown {unknown}; use auto, none or a list of {', '.join(REPORT_TARGETS)}")
    for target in wanted:
        package = PACKAGES.get(target)
        if package and importlib.util.find_spec(package) is None:
            raise JobInputError(f"train.report_to lists {target}, but the {package} package is not installed in the "
                                f"training image; install it in the image the job runs (`pip install {package}`), or drop {target}")
    return list(dict.fromkeys(wanted))
