"""Which training precisions each accelerator takes: one rule per accelerator, decided from the catalog's facts
(vendor, CUDA compute capability), so the plan, `validate` and the job all give the same answer on every image.

* NVIDIA GPUs: bf16 needs compute capability 8.0 or newer (Ampere: bf16 tensor cores; NVIDIA CUDA C++
  Programming Guide, "Arithmetic Instructions"). On torch >= 2.3 `torch.cuda.is_bf16_supported()` also counts
  emulation (its `including_emulation=True` default), so it is not asked: the capability is. fp16 (mixed precision
  with a loss scaler) runs on every CUDA GPU.
* TPUs (PyTorch/XLA): bf16 is the native type; fp16 is refused (the Trainer has no fp16 loss-scaling path on XLA;
  pytorch/xla#867, #1936).
* cpu: fp16 mixed precision needs a CUDA GPU (the Trainer's fp16 grad scaler is CUDA's); bf16 and fp32 run.
* `auto`: bf16 where it is native (GPU 8.0+, TPU), fp16 on an older GPU, fp32 on cpu.

Standard library only (the catalog is on the CLI's start-up path).
"""

from __future__ import annotations

from cloudtune.catalog import AcceleratorInfo

__all__ = ["BF16_MIN_CAPABILITY", "bf16_native", "precision_problem", "resolve"]

BF16_MIN_CAPABILITY = (8, 0)
PRECISION_FIELD = "train.hyperparameters.precision"


def bf16_native(info: AcceleratorInfo | None, capability: tuple[int, int] | None = None) -> bool:
    """Whether bf16 is a native training type on `info` (None: cpu). `capability` overrides the catalog's (the job
    passes its own GPU's, read with torch.cuda.get_device_capability)."""
    if info is None and capability is None:
        return False
    if info is not None and info.vendor == "google":
        return True
    found = capability or (info.compute_capability if info is not None else None)
    if found is None:  # a GPU the catalog has no capability for: its peak bf16 figure tells
        return bool(info is not None and info.peak_bf16_tflops)
    return tuple(found) >= BF16_MIN_CAPABILITY


def resolve(requested: str, info: AcceleratorInfo | None, capability: tuple[int, int] | None = None) -> str:
    """The precision the job trains in: `requested`, or for `auto` see the module doc. Does not refuse."""
    if requested != "auto":
        return requested
    if info is not None and info.vendor == "google":
        return "bf16"
    if info is None and capability is None:
        return "fp32"
    return "bf16" if bf16_native(info, capability) else "fp16"


def precision_problem(requested: str, info: AcceleratorInfo | None, shown: str) -> str | None:
    """Why `requested` cannot train on the accelerator `info` (None: cpu), named `shown` (e.g. `TPU-v5e:4`), as
    one line naming the field with a "To fix:"; None when it can."""
    where = f"{PRECISION_FIELD}: {requested} on resources.accelerator {shown}"
    if requested == "fp16" and info is None:
        return (f"{where}: fp16 mixed precision needs a CUDA GPU (the loss scaler is CUDA's). To fix: use "
                f"precision: bf16 or fp32 on CPU, leave precision: auto, or choose a GPU accelerator")
    if requested == "fp16" and info.vendor == "google":
        return (f"{where}: PyTorch/XLA on a TPU trains in bf16 only, fp16 is not supported (pytorch/xla#867). "
                f"To fix: use precision: bf16, or leave precision: auto (bf16 on a TPU)")
    if requested == "bf16" and info is not None and info.vendor == "nvidia" and not bf16_native(info):
        cc = ".".join(map(str, info.compute_capability)) if info.compute_capability else "unknown"
        return (f"{where}: bf16 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere), and {info.name} "
                f"is {cc}. To fix: use precision: fp16 (or auto, which is fp16 there), or an Ampere or newer GPU "
                f"(L4, A10G, A100, H100)")
    return None
