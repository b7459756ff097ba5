"""FSDP for the recipes: which layer class wraps one unit each, and the TrainingArguments keywords that turn FSDP2
on (`train.distributed: fsdp`). PyTorch/XLA's SPMD FSDPv2 (`cloudtune.train.xla`) wraps the same layer class."""

from __future__ import annotations

from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.spec import TrainSpec


def fsdp_layer_classes(model: Any) -> list[str]:
    """The class names FSDP wraps one unit each: the model's repeated decoder (or encoder) layer.

    Taken from the module list of layers (`transformer.h`, `model.layers`, `encoder.layer`, ...: the longest
    `ModuleList` whose entries share one class), else from transformers' `_no_split_modules` where those name
    classes present in the model. A PEFT wrapper is looked through.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    best: list[Any] = []
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best) and len({type(m) for m in module}) == 1:
            best = list(module)
    if best:
        return [type(best[0]).__name__]
    present = {type(m).__name__ for m in base.modules()}
    names = [n for n in (getattr(base, "_no_split_modules", None) or []) if n in present]
    if names:
        return sorted(set(names))
    raise JobInputError(f"train.distributed fsdp: cannot tell the decoder layer class of {type(base).__name__} "
                     f"(no list of identical layers, no _no_split_modules); use distributed: ddp")


def fsdp_settings(train: TrainSpec, model: Any, world_size: int) -> dict[str, Any]:
    """TrainingArguments keywords for `train.distributed` (empty for ddp, or fsdp in a single process).

    fsdp: FSDP2 full shard (parameters resharded after the forward), one unit per decoder layer, full state dicts
    (checkpoints hold `model.safetensors` + `pytorch_model_fsdp.bin` + the full optimizer state, written by rank 0,
    and load on any world size). gradient_checkpointing becomes FSDP's own activation checkpointing.
    """
    if train.distributed != "fsdp" or world_size <= 1:
        return {}
    return {
        "fsdp": True,  # transformers 5.24: `fsdp="full_shard auto_wrap"` is the deprecated spelling of this config
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,  # full shard (False would be shard_grad_op)
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": fsdp_layer_classes(model),
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
            "activation_checkpointing": bool(train.hyperparameters.gradient_checkpointing),  # null: not asked for
        },
    }
