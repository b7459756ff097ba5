"""How the recipes load the model for training: its dtype, QLoRA's 4-bit quantization, and whether to checkpoint
gradients. Called by the recipes inside the job; imports torch and transformers only inside the functions.

* `model_load_kwargs(train, task, device_type)`: the `from_pretrained` keywords. A LoRA base model is loaded in
  bf16 when the job trains in bf16 on a GPU or TPU (the frozen weights then take 2 bytes each instead of 4; the
  adapter stays fp32, peft's default), else in fp32 as before. `lora.quantize: 4bit` adds a bitsandbytes NF4
  `quantization_config` (double quantization, bf16 compute; fp16 compute on a GPU without bf16) and places the
  model on this process's GPU (`device_map`), since a 4-bit model cannot be moved after loading.
* `check_quantize(train, device_type)`: QLoRA's refusals, each a JobInputError with the reason and the fix.
* `prepare_quantized(model, gradient_checkpointing)`: peft's `prepare_model_for_kbit_training` (norms, embeddings
  and head in fp32, input gradients for checkpointing), before `apply_lora`.
* `decide_gradient_checkpointing(train, model, device_type)` and `with_gradient_checkpointing(train, on)`: null
  `hyperparameters.gradient_checkpointing` decided from the memory estimate (cloudtune.memory) and this device's
  memory, and the TrainSpec handed on with a plain true/false.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.memory import facts_from_config, setup_for, wants_gradient_checkpointing
from cloudtune.spec import TrainSpec
from cloudtune.train.arguments import cuda_bf16, resolve_precision

QLORA_FIX = "train on a CUDA GPU (resources.accelerator: L4:1, A10G:1, ...), or remove train.lora.quantize to load " \
            "the base model in bf16"


def check_quantize(train: TrainSpec, device_type: str) -> None:
    """Refuse `lora.quantize: 4bit` where it cannot run (JobInputError naming why and the fix): not on a CUDA device
    (bitsandbytes' 4-bit kernels are CUDA only; a TPU trains through PyTorch/XLA), bitsandbytes not installed, FSDP
    (cloudtune's FSDP2 wrapping does not shard bitsandbytes parameters), and `lora.merge: true` (merging into a
    4-bit base quantizes the sum again, rounding away most of the adapter's update, and saves a bitsandbytes
    checkpoint rather than plain weights). `device_type`: cuda, cpu, xla or mps."""
    lora = train.lora
    if lora is None or lora.quantize is None:
        return
    if device_type == "xla":
        raise JobInputError("train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes); this job runs on a TPU through "
                            f"PyTorch/XLA. To fix: {QLORA_FIX}")
    if device_type != "cuda":
        raise JobInputError(f"train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes); this process has {device_type} "
                            f"only. To fix: {QLORA_FIX}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise JobInputError("train.lora.quantize: 4bit needs the bitsandbytes package, which this image lacks. To fix: "
                            "use cloudtune's GPU image (containers/gpu installs cloudtune[train,qlora]) or pip install "
                            "'bitsandbytes>=0.45' in your image, or remove train.lora.quantize")
    if train.distributed == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise JobInputError("train.lora.quantize: 4bit cannot be sharded by cloudtune's FSDP (FSDP2 does not shard "
                            "bitsandbytes 4-bit parameters). To fix: use distributed: ddp, or remove quantize")
    if lora.merge:
        raise JobInputError("train.lora.merge with lora.quantize: 4bit would merge the adapter into 4-bit weights, "
                            "quantizing the sum again (the adapter's update is smaller than an NF4 step) and saving a "
                            "bitsandbytes checkpoint. To fix: remove merge and merge later into the bf16 base")


def _bf16_supported(device_type: str) -> bool:
    if device_type == "cuda":
        return cuda_bf16()
    return device_type == "xla"


def training_precision(train: TrainSpec, device_type: str, bf16_supported: bool | None = None) -> str:
    """The precision the job trains in on this device (bf16, fp16 or fp32), as cloudtune.train.trainer resolves it:
    `auto` = bf16 on a bf16-capable GPU or a TPU, fp16 on an older GPU, fp32 on CPU."""
    bf16 = _bf16_supported(device_type) if bf16_supported is None else bf16_supported
    if device_type == "xla":
        return "fp32" if train.hyperparameters.precision == "fp32" else "bf16"
    return resolve_precision(train.hyperparameters.precision, device_type == "cuda", bf16)


def model_load_kwargs(train: TrainSpec, task: str, device_type: str, bf16_supported: bool | None = None) -> dict[str, Any]:
    """Keywords for `from_pretrained`: `dtype`, and under `lora.quantize: 4bit` a BitsAndBytesConfig (NF4, double
    quantization, bf16 compute) and `device_map` (this process's GPU, LOCAL_RANK). `bf16_supported` None: asked
    of the device. Raises JobInputError where QLoRA cannot run (see `check_quantize`)."""
    import torch

    check_quantize(train, device_type)
    bf16 = _bf16_supported(device_type) if bf16_supported is None else bf16_supported
    precision = training_precision(train, device_type, bf16)
    lora = train.lora
    half = lora is not None and precision == "bf16" and bf16 and device_type in ("cuda", "xla")
    from cloudtune.train.knobs import attention_kwargs

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if half else torch.float32, **attention_kwargs(train)}
    if lora is not None and lora.quantize == "4bit":
        kwargs["quantization_config"] = bnb_config(task, bf16)
        kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float16
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return kwargs


def bnb_config(task: str, bf16: bool) -> Any:
    """QLoRA's transformers BitsAndBytesConfig (Dettmers et al. 2023): 4-bit NF4 weights, double quantization of
    the constants, bf16 compute (fp16 on a GPU without bf16, e.g. T4). A seq-classification head is left out of
    the quantization: it is new and trained in full. Building it needs no bitsandbytes; loading with it does."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
        llm_int8_skip_modules=["score", "classifier"] if task == "seq-classification" else None)


def prepare_quantized(model: Any, gradient_checkpointing: bool) -> Any:
    """Ready a 4-bit model for LoRA training (peft.prepare_model_for_kbit_training): frozen base, layer norms,
    embeddings and head in fp32, and, with `gradient_checkpointing`, checkpointing on (non-reentrant) with input
    gradients enabled. A model that is not quantized is returned as it is."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def is_quantized(model: Any) -> bool:
    """Whether `model` (or the model a peft wrapper holds) was loaded in 4 or 8 bits by bitsandbytes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)
                or getattr(getattr(base, "config", None), "quantization_config", None))


def device_memory(device_type: str) -> int | None:
    """Bytes of memory of this process's GPU (torch.cuda), None elsewhere (CPU, TPU, MPS: not decided by memory)."""
    if device_type != "cuda":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


def decide_gradient_checkpointing(train: TrainSpec, model: Any, device_type: str,
                                  device_bytes: int | None = None) -> bool:
    """`hyperparameters.gradient_checkpointing` for this run: true/false as the user set it; null = on when the
    memory estimate (cloudtune.memory, from the loaded model's config) without it exceeds this GPU's memory
    (`device_bytes`, default: asked of torch.cuda) less cloudtune.memory.HEADROOM. Off on CPU and TPU."""
    requested = train.hyperparameters.gradient_checkpointing
    if requested is not None:
        return requested
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.to_dict() if hasattr(base.config, "to_dict") else dict(base.config)
    facts = facts_from_config(config, "the loaded model's config")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    setup = setup_for(train, training_precision(train, device_type), world, gradient_checkpointing=False)
    memory = device_bytes if device_bytes is not None else device_memory(device_type)
    return wants_gradient_checkpointing(facts, setup, memory, None)


def with_gradient_checkpointing(train: TrainSpec, on: bool) -> TrainSpec:
    """`train` with `hyperparameters.gradient_checkpointing` set to `on` (what the trainer and the model card see)."""
    hp = train.hyperparameters.model_copy(update={"gradient_checkpointing": bool(on)})
    return train.model_copy(update={"hyperparameters": hp})
