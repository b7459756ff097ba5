"""Which modules LoRA adapts, torch-free: `auto` per architecture (`AUTO_TARGETS`, by the config's model_type), or
the user's list checked against the model's Linear-like modules. The plan-time checks (`cloudtune.preflight.deep`)
and the recipes (`cloudtune.train.lora`) resolve `train.lora.target_modules` with the same rules.
"""

from __future__ import annotations

from typing import Any

from cloudtune.errors import JobInputError

ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

AUTO_TARGETS: dict[str, list[str]] = {
    # decoder-only
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ATTN_MLP, "mistral": ATTN_MLP, "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ATTN_MLP, "qwen3": ATTN_MLP, "qwen2_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ATTN_MLP, "gemma2": ATTN_MLP, "gemma3_text": ATTN_MLP, "olmo": ATTN_MLP, "olmo2": ATTN_MLP,
    "granite": ATTN_MLP, "smollm3": ATTN_MLP, "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "gpt_bigcode": ["c_attn", "c_proj", "c_fc"],
    # encoders
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "modernbert": ["Wqkv", "Wo", "Wi"],
}

HEAD_NAMES = {"lm_head", "score", "classifier", "classification_head", "out_proj_head"}


def linear_module_names(model: Any) -> list[str]:
    """The distinct leaf names of Linear-like modules (torch.nn.Linear and its subclasses, such as bitsandbytes'
    Linear4bit; GPT-2's Conv1D), heads excluded. Told by class, so this module imports no torch."""
    names: set[str] = set()
    for full, module in model.named_modules():
        leaf = full.rsplit(".", 1)[-1]
        if not full or leaf in HEAD_NAMES or full.split(".")[0] in HEAD_NAMES:
            continue
        if _is_linear(type(module)):
            names.add(leaf)
    return sorted(names)


def resolve_target_modules(model: Any, target_modules: Any) -> list[str]:
    """`auto` -> the known list for the model's architecture; an explicit list is checked against the model."""
    found = linear_module_names(model)
    model_type = str(getattr(model.config, "model_type", "") or "")
    if target_modules == "auto":
        targets = AUTO_TARGETS.get(model_type)
        if targets is None:
            raise JobInputError(
                f"train.lora.target_modules: auto does not know architecture {model_type!r}; list the modules to "
                f"adapt, e.g. target_modules: [{', '.join(found[:4])}]. Linear modules in this model: {', '.join(found) or 'none'}"
            )
        targets = [t for t in targets if t in found]
        if not targets:
            raise JobInputError(
                f"train.lora.target_modules: auto expected {AUTO_TARGETS[model_type]} in this {model_type} model but "
                f"found none; list them yourself. Linear modules in this model: {', '.join(found) or 'none'}"
            )
        return targets
    missing = [t for t in target_modules if t not in found]
    if missing:
        raise JobInputError(
            f"train.lora.target_modules: {', '.join(map(repr, missing))} match no Linear module of this model; "
            f"Linear modules in this model: {', '.join(found) or 'none'} (or use auto)"
        )
    return list(target_modules)


def _is_linear(cls: type) -> bool:
    return cls.__name__ == "Conv1D" or any(c.__name__ == "Linear" and c.__module__ == "torch.nn.modules.linear"
                                           for c in cls.__mro__)
