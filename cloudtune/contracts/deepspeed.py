"""The DeepSpeed configuration a `distributed: deepspeed-zero2|zero3` job trains with (standard library only: the plan
writes it into the job, the container hands it to transformers' TrainingArguments(deepspeed=...)).

Values marked "auto" are filled in by transformers' DeepSpeed integration (`HfTrainerDeepSpeedConfig.trainer_config_process`)
from the TrainingArguments (batch size, accumulation, clipping, precision, optimizer and scheduler), so the spec stays
the one source of those numbers. ZeRO-3 gathers the 16-bit weights on save (`stage3_gather_16bit_weights_on_model_save`)
so the model dir holds whole weights, as with ddp.

ZeRO's memory per GPU (Rajbhandari et al. 2020, "ZeRO", section 5; the DeepSpeed docs' memory estimators), with Ψ
parameters, N GPUs and K = 12 bytes of fp32 Adam state per parameter: stage 2 keeps 2Ψ (16-bit weights) + (2Ψ + KΨ)/N;
stage 3 keeps (2Ψ + 2Ψ + KΨ)/N. `cloudtune.memory` divides that way.
"""

from __future__ import annotations

from typing import Any

STAGES = {"deepspeed-zero2": 2, "deepspeed-zero3": 3}


def deepspeed_config(distributed: str) -> dict[str, Any]:
    """The DeepSpeed JSON config of `distributed` (deepspeed-zero2 or deepspeed-zero3); KeyError for anything else."""
    stage = STAGES[distributed]
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero |= {"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True}
    else:
        zero |= {"stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                 "sub_group_size": 1e9, "stage3_gather_16bit_weights_on_model_save": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000_000,  # cloudtune logs the steps itself
        "wall_clock_breakdown": False,
    }


def sharded_bytes_per_param(distributed: str, world_size: int, weight_bytes: int, state_bytes: int) -> float:
    """Bytes per trained parameter on one GPU under ZeRO: 16-bit weights (`weight_bytes`) + gradients
    (`weight_bytes`) + optimizer state with fp32 master weights (`state_bytes`), divided as the stage divides them
    (see the module doc)."""
    n = max(1, world_size)
    if distributed == "deepspeed-zero3":
        return (2 * weight_bytes + state_bytes) / n
    return weight_bytes + (weight_bytes + state_bytes) / n


__all__ = ["STAGES", "deepspeed_config", "sharded_bytes_per_param"]
