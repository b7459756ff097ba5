"""Plan-time refusals and notes of the training knobs, publishing and disk space (no torch, no network, no SDK).

* `hyperparameters.optimizer` 8-bit / paged AdamW (bitsandbytes) without a CUDA GPU;
* `train.attn_implementation: flash_attention_2` on CPU, a TPU, or an NVIDIA GPU under compute capability 8.0
  (FlashAttention-2 supports Ampere and newer: the flash-attn README; the catalog's `compute_capability`);
* `distributed: deepspeed-zero2|zero3` on a TPU (DeepSpeed has CUDA and CPU accelerators, no PyTorch/XLA one);
* `train.push_to_hub` without its token secret under `secrets:` (or with the token in plain `env:`);
* `train.trust_remote_code: true` is said in the plan's notes (the model's own code runs in the job);
* disk: checkpoints x `keep` + the written model + the downloaded base + the data cache against
  `resources.disk_gb`, with the smallest disk_gb that fits (`disk_need`).

Each problem is one line naming the field, with "To fix:".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.spec.preference import CUDA_ONLY_OPTIMIZERS
from cloudtune.units import beside

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec, TrainSpec

FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)
ADAM_STATE_BYTES = 8  # two fp32 moments per trained parameter (torch.optim.AdamW)
DATA_CACHE_FACTOR = 3  # 🤗 Datasets' Arrow copy of the raw files + the tokenised copy (about their size again)


def _device(spec: "JobSpec") -> tuple[str, Any]:
    """('cpu', None), ('tpu', info) or ('gpu', info) of resources.accelerator (info None when not in the catalog)."""
    accel = spec.resources.accel
    if accel.is_cpu:
        return "cpu", None
    from cloudtune.catalog import CatalogError, load_catalog

    try:
        info = load_catalog().info(accel.name)
    except CatalogError:
        return "gpu", None
    return ("tpu" if info is not None and info.vendor == "google" else "gpu"), info


def knob_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """What the accelerator cannot run of the knobs and publishing settings (see the module doc)."""
    kind, info = _device(spec)
    shown = spec.resources.accelerator
    problems: list[str] = []
    optimizer = train.hyperparameters.optimizer
    if optimizer in CUDA_ONLY_OPTIMIZERS and kind != "gpu":
        problems.append(f"train.hyperparameters.optimizer {optimizer} on resources.accelerator {shown}: "
                        f"{CUDA_ONLY_OPTIMIZERS[optimizer]}. To fix: use adamw_torch, adamw_torch_fused or adafactor, "
                        f"or a CUDA GPU accelerator")
    if train.attn_implementation == "flash_attention_2":
        capability = getattr(info, "compute_capability", None)
        if kind != "gpu":
            why = "a TPU runs PyTorch/XLA's attention" if kind == "tpu" else "FlashAttention-2 runs on CUDA GPUs only"
            problems.append(f"train.attn_implementation flash_attention_2 on resources.accelerator {shown}: {why}. "
                            f"To fix: use sdpa (or auto), or a CUDA GPU of compute capability 8.0+ (A10G, L4, A100, H100)")
        elif capability is not None and tuple(capability) < FLASH_ATTENTION_MIN_CAPABILITY:
            problems.append(f"train.attn_implementation flash_attention_2 on resources.accelerator {shown}: compute "
                            f"capability {capability[0]}.{capability[1]}, and FlashAttention-2 needs 8.0+ (Ampere). "
                            f"To fix: use sdpa (or auto), or an A10G, L4, A100 or H100")
    if train.distributed in ("deepspeed-zero2", "deepspeed-zero3") and kind == "tpu":
        problems.append(f"train.distributed {train.distributed} on resources.accelerator {shown}: DeepSpeed does not "
                        f"run under PyTorch/XLA. To fix: use distributed: fsdp (FSDPv2 on a TPU), or a CUDA GPU")
    problems += push_problems(spec, train)
    return problems


def push_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """`train.push_to_hub` needs its token as a secret reference, never as a plain variable."""
    push = train.push_to_hub
    if push is None:
        return []
    name = push.token_secret
    if name in spec.env:
        return [f"env.{name}: the Hub token of train.push_to_hub is in plain env, where it would travel in the job "
                f"request. To fix: store it in your cloud's secret manager and name it under secrets: {{{name}: ...}}"]
    if name not in spec.secrets:
        return [f"train.push_to_hub.token_secret {name!r} is not under `secrets:`; the push needs a Hub token with "
                f"write access. To fix: add secrets: {{{name}: <secret reference>}}"]
    return []


def knob_notes(train: "TrainSpec") -> list[str]:
    """Plan notes that do not stop the job."""
    notes = []
    if train.trust_remote_code:
        notes.append(f"train.trust_remote_code: the Python code shipped with {train.model} runs inside the job "
                     f"(its own modelling files); read it first")
    if train.push_to_hub is not None:
        push = train.push_to_hub
        notes.append(f"train.push_to_hub: at the end of a successful job, the model and its card go to "
                     f"https://huggingface.co/{push.repo}" + (f" (branch {push.revision})" if push.revision else "")
                     + (", created private" if push.private else ", created public"))
    return notes


def disk_need(spec: "JobSpec", facts: Any) -> tuple[int, dict[str, int]] | None:
    """(bytes, parts) a train job writes on one node's disk: `keep` checkpoints (weights as trained + optimizer
    state + gradients' scaler files, negligible), the model written at the end, the base model's download (a hub
    id), the data's cache; None without the model's facts. ZeRO / FSDP checkpoints hold the full state on rank 0."""
    train = spec.train
    if train is None or facts is None:
        return None
    from cloudtune.memory import lora_params

    lora = train.lora
    trained = facts.params if lora is None else lora_params(
        facts, lora.r, tuple(lora.target_modules) if lora.target_modules != "auto" else "auto")
    weight_bytes = 4  # cloudtune trains full weights in fp32 (AMP autocasts per op); an adapter is fp32 too
    checkpoint = trained * (weight_bytes + ADAM_STATE_BYTES)
    written = facts.params * weight_bytes if lora is None or lora.merge else trained * weight_bytes
    parts = {"checkpoints": checkpoint * spec.checkpoint.keep, "model": written}
    if not (Path(train.model).is_dir() or train.model in spec.inputs or train.model.startswith("job:")):
        parts["base model download"] = facts.params * 2  # hub weights are mostly bf16 / fp16 safetensors
    data = 0
    for name in (train.data.train, train.data.eval):
        uri = spec.inputs.get(name) if name else None
        if uri and Path(uri).exists():
            path = Path(uri)
            data += path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if data:
        parts["data and its cache"] = data * DATA_CACHE_FACTOR
    return sum(parts.values()), parts


def disk_problem(spec: "JobSpec", facts: Any) -> str | None:
    """The refusal when `disk_need` exceeds resources.disk_gb, with the smallest disk_gb that fits (+10% for the
    image, logs and a checkpoint being written while the oldest is rotated away)."""
    need = disk_need(spec, facts)
    if need is None:
        return None
    total, parts = need
    fits = math.ceil(total * 1.1 / 1e9)
    if fits <= spec.resources.disk_gb:
        return None
    listed = ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in parts.items())
    needed, disk = beside(total * 1.1 / 1e9, spec.resources.disk_gb, 0)
    return (f"resources.disk_gb {disk}: the job needs about {needed} GB on each node's disk, a tenth over what it "
            f"writes ({listed}; checkpoint.keep {spec.checkpoint.keep}). To fix: set resources.disk_gb: {fits} (the "
            f"smallest that fits), or lower checkpoint.keep, or train a LoRA adapter")


__all__ = ["disk_need", "disk_problem", "knob_notes", "knob_problems", "push_problems"]
