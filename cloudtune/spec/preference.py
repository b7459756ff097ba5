"""Spec parts of preference tuning (`train.preference`), publishing (`train.push_to_hub`) and the training knobs'
allowed values: pure pydantic models and constants, no import beyond pydantic (the spec's layer).

Option names follow TRL (DPOConfig, KTOConfig, ORPOConfig, CPOConfig) and transformers' TrainingArguments
(`optim`, `lr_scheduler_type`, `warmup_steps`, `max_grad_norm`); each value listed is one those classes accept
(transformers 5.25 `OptimizerNames`, `SchedulerType`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cloudtune.spec.base import Strict

OPTIMIZERS = ("adamw", "adamw_torch", "adamw_torch_fused", "adafactor", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit",
              "paged_adamw_32bit")
"""`adamw` is torch's AdamW (TrainingArguments' `adamw_torch`); `adamw_8bit` is bitsandbytes' (as transformers names it,
also `adamw_bnb_8bit`); the others are TrainingArguments `optim` names as they are."""
TRAINER_OPTIM = {"adamw": "adamw_torch"}
IMAGE_OPTIMIZERS = ("adamw", "adamw_8bit")
CUDA_ONLY_OPTIMIZERS = {
    "adamw_8bit": "bitsandbytes' 8-bit AdamW runs CUDA kernels only",
    "adamw_bnb_8bit": "bitsandbytes' 8-bit AdamW runs CUDA kernels only",
    "paged_adamw_8bit": "bitsandbytes' paged AdamW pages optimizer state through CUDA unified memory",
    "paged_adamw_32bit": "bitsandbytes' paged AdamW pages optimizer state through CUDA unified memory",
}
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
DEEPSPEED = ("deepspeed-zero2", "deepspeed-zero3")
HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PreferenceSpec(Strict):
    """`train.preference`: how `task: preference` tunes on preference data, through TRL's trainers."""

    method: Literal["dpo", "orpo", "kto", "simpo"] = Field(
        "dpo", description="dpo (TRL DPOTrainer), orpo (ORPOTrainer: no reference model, an SFT term on the chosen "
        "answer), kto (KTOTrainer: paired or unpaired prompt + completion + label data), simpo (CPOTrainer with "
        "loss_type simpo, cpo_alpha 0: no reference model, length-normalised rewards)")
    beta: float = Field(0.1, gt=0, le=100, description="the temperature of the implicit reward (DPO/KTO: how far "
                        "the policy may move from the reference; ORPO: the weight of the odds-ratio term; SimPO: the "
                        "reward scale, 2.0 in the SimPO paper)")
    reference: Literal["auto", "copy", "precomputed"] = Field(
        "auto", description="dpo and kto: the reference model. auto = with LoRA the base model with the adapter "
        "switched off (no second copy in memory), else a frozen copy; copy = a frozen copy; precomputed = the "
        "reference log-probabilities of every example computed once before training (cached per node in the "
        "🤗 Datasets cache), then no reference model in memory")
    simpo_gamma: float = Field(0.5, ge=0, le=100, description="simpo: the target reward margin")
    desirable_weight: float = Field(1.0, gt=0, le=1000, description="kto: the loss weight of desirable examples")
    undesirable_weight: float = Field(1.0, gt=0, le=1000, description="kto: the loss weight of undesirable examples")

    @model_validator(mode="after")
    def _consistent(self) -> "PreferenceSpec":
        if self.method in ("orpo", "simpo") and self.reference != "auto":
            raise ValueError(f"train.preference.reference: {self.method} has no reference model (its loss needs "
                             f"none); remove `reference:`, or use method dpo or kto")
        return self


class PushToHubSpec(Strict):
    """`train.push_to_hub`: publish the final model (or adapter) and its card to the Hugging Face Hub."""

    repo: str = Field(..., description="the Hub model repository, ORG/NAME (created when missing)")
    private: bool = Field(True, description="create the repository private (an existing one keeps its visibility)")
    revision: str | None = Field(None, description="the branch to push to (created from main when missing); null = main")
    token_secret: str = Field("HF_TOKEN", description="the name, under `secrets:`, of the secret holding a Hub "
                              "token with write access")

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not HUB_REPO.match(v) or ".." in v or v.endswith((".git", ".")):
            raise ValueError(f"push_to_hub.repo {v!r} is not a Hub repository id; write ORG/NAME, e.g. my-org/my-model")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or re.search(r"[\s~^:?*\[\\]|\.\.|//", v)):
            raise ValueError(f"push_to_hub.revision {v!r} is not a branch name; e.g. dpo-v1, or null for main")
        return v


def check_preference_task(train: Any) -> None:
    """ValueError (one sentence with the fix) for what `task: preference` cannot take, or its options on another task.
    `train` is a TrainSpec (duck-typed: this module sits below it). The `train.data` options the recipe does not read
    (format, chat_template, labels, the field names) are refused by `cloudtune.spec.data.unread_data_option`."""
    data = train.data
    if train.preference is not None and train.task != "preference":
        raise ValueError("train.preference applies to task preference only; set task: preference or remove it")
    if train.task == "preference":
        for name, on in (("packing", data.packing), ("streaming", data.streaming)):
            if on:
                raise ValueError(f"train.data.{name} applies to task causal-lm; preference pairs are read whole by "
                                 f"TRL's trainer: remove `{name}: true`")
        method = train.preference.method if train.preference is not None else "dpo"
        if method == "kto" and train.hyperparameters.batch_size < 2:
            raise ValueError(f"train.hyperparameters.batch_size {train.hyperparameters.batch_size}: KTO needs at least "
                             "2 examples per device batch (TRL's KTOTrainer estimates its KL term from the other "
                             "examples of the batch); set batch_size: 2 or more")
    if train.task == "text-to-image" and train.hyperparameters.optimizer not in IMAGE_OPTIMIZERS:
        raise ValueError(f"train.hyperparameters.optimizer {train.hyperparameters.optimizer}: text-to-image takes "
                         f"{' or '.join(IMAGE_OPTIMIZERS)}; use one of them")
    if train.distributed in DEEPSPEED and train.lora is not None and train.lora.quantize is not None:
        raise ValueError(f"train.lora.quantize: 4bit with distributed: {train.distributed}: cloudtune does not shard "
                         f"bitsandbytes 4-bit weights with DeepSpeed; use distributed: ddp with QLoRA")


__all__ = ["IMAGE_OPTIMIZERS", "TRAINER_OPTIM", "check_preference_task", "ATTN_IMPLEMENTATIONS", "CUDA_ONLY_OPTIMIZERS", "DEEPSPEED", "LR_SCHEDULERS", "OPTIMIZERS",
           "PreferenceSpec", "PushToHubSpec"]
