"""The recipes on PyTorch/XLA (Cloud TPU): what differs from the CPU/GPU path, in one place.

Everything here is used only when `cloudtune.runtime.xla.xla_device_type()` names a device (torch_xla installed and
PJRT_DEVICE set, or TPU chips present); the CPU/GPU path never calls it and never imports torch_xla.

- Device: the Trainer picks the XLA device by itself (TrainingArguments.device under torch_xla); one process per
  host (the runtime starts no torchrun: see cloudtune.entrypoint.announce_xla).
- Optimizer: AdamW without the fused kernel. transformers >= 5 defaults to `adamw_torch_fused` with torch >= 2.8,
  and torch's fused AdamW refuses XLA tensors ("`fused=True` requires all the params ... to be ... on a supported
  device", measured with torch 2.9 / torch_xla 2.9); `adamw_torch` is the same update computed per tensor.
- Precision: `auto` is bf16 on a TPU (its native matmul type), fp32 on XLA's CPU device; fp16 is refused (TPUs have
  no fp16 loss-scaling path in the Trainer).
- Fixed shapes: XLA compiles one graph per input shape, so batches are padded to `max_seq_len` (the collators'
  `pad_to`) and the last partial training batch is dropped (when there is at least one full batch). Evaluation keeps
  every example (its last partial batch costs one more compilation).
- `distributed: fsdp`: SPMD FSDPv2 through the Trainer's XLA FSDP settings (`fsdp_config: {xla: true,
  xla_fsdp_v2: true}`) over a 1-D mesh of all the host's devices, which the Trainer builds. Two gaps of
  transformers 5.24 are filled in `cloudtune.train.trainer`: the Trainer wraps the model but never creates the
  optimizer (`'NoneType' object has no attribute 'param_groups'`), and `save_model` writes the wrapper's
  `_orig_module.`-prefixed keys without a config; `spmd_state_dict`/`unwrap_spmd` give save_pretrained the plain
  model's keys, so checkpoints and the final model load with `from_pretrained` on CPU/GPU.
  Sources: PyTorch/XLA docs "Fully Sharded Data Parallel using SPMD" (FSDPv2; `xr.use_spmd()` before any XLA
  tensor exists) and transformers' `integrations/tpu.py` (`wrap_model_xla_fsdp`, `save_tpu_checkpoint`).
"""

from __future__ import annotations

from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.train.fsdp import fsdp_layer_classes

# The non-fused torch AdamW (see the module docstring).
XLA_OPTIM = "adamw_torch"
# Key parts that the FSDPv2 wrapper (and torch_xla's checkpoint_module) put into parameter names.
_WRAPPER_PARTS = ("_orig_module.", "_checkpoint_wrapped_module.")


def xla_precision(requested: str, device: str) -> str:
    """`auto`: bf16 on a TPU, fp32 on any other XLA device (XLA's CPU device in tests). fp16 is refused."""
    if requested == "fp16":
        raise JobInputError("hyperparameters.precision fp16 is not supported on PyTorch/XLA (TPU): use bf16 "
                            "(or leave precision: auto, which is bf16 on a TPU)")
    if requested == "auto":
        return "bf16" if device == "TPU" else "fp32"
    return requested


def enable_spmd() -> None:
    """Switch torch_xla to SPMD mode (one process drives every device of the host). Must run before any XLA tensor
    exists, i.e. before the TrainingArguments' device and the model's move to it; a second call does nothing."""
    import torch_xla.runtime as xr

    if not getattr(xr, "is_spmd", lambda: False)():
        xr.use_spmd()


def xla_training_kwargs(train: Any, model: Any) -> dict[str, Any]:
    """TrainingArguments keywords of the XLA path: the non-fused optimizer, and FSDPv2 for `distributed: fsdp`
    (SPMD switched on here, before the Trainer touches the device)."""
    kwargs: dict[str, Any] = {"optim": XLA_OPTIM}
    if train.distributed != "fsdp":
        return kwargs

    layers = fsdp_layer_classes(model) if model is not None else None
    enable_spmd()
    config: dict[str, Any] = {"xla": True, "xla_fsdp_v2": True,
                              "xla_fsdp_grad_ckpt": bool(train.hyperparameters.gradient_checkpointing)}
    if layers:
        config["transformer_layer_cls_to_wrap"] = layers
    return kwargs | {"fsdp": True, "fsdp_config": config}  # transformers 5.24: True + fsdp_config, not a string


def is_spmd_wrapped(model: Any) -> bool:
    """Whether `model` is torch_xla's SPMD FSDPv2 wrapper."""
    return type(model).__name__ == "SpmdFullyShardedDataParallel"


def unwrap_spmd(model: Any) -> Any:
    """The model inside an FSDPv2 wrapper (its `module`); other models as they are."""
    while is_spmd_wrapped(model):
        model = model.module
    return model


def plain_key(key: str) -> str:
    """A parameter name without the wrappers' parts: `_orig_module.model.layers.0._orig_module.mlp.up_proj.weight`
    -> `model.layers.0.mlp.up_proj.weight`."""
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


def spmd_state_dict(model: Any) -> dict[str, Any]:
    """The full state dict of a (possibly FSDPv2-wrapped) model on the CPU, under the plain model's names.

    Moving a sharded XLA tensor to the CPU gathers its shards, so every host must call this together."""
    import torch_xla.core.xla_model as xm

    xm.mark_step()
    state = {plain_key(k): v for k, v in model.state_dict().items()}
    return xm._maybe_convert_to_cpu(state)


def without_tied(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """`state` without the names of tied parameters (an lm_head tied to the embeddings), which save_pretrained
    would otherwise write twice."""
    every = {plain_key(n) for n, _ in model.named_parameters(remove_duplicate=False)}
    kept = {plain_key(n) for n, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k not in every - kept}
