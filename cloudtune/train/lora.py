"""LoRA through peft: target modules (`auto` per architecture), wrapping, and saving (adapter, optionally merged).

Saved layout in the model dir:

* `merge: false` — the adapter (`adapter_config.json`, `adapter_model.safetensors`) next to the tokenizer:
  `AutoPeftModelForCausalLM.from_pretrained(model_dir)` (or `PeftModel.from_pretrained(base, model_dir)`) loads it.
  A seq-classification adapter holds its trained head and has the classifier's `config.json` (labels, pad token)
  beside it; see the model card for the reload.
* `merge: true` — merged full weights (`config.json`, `model.safetensors`: a plain transformers model) and the
  adapter in `model_dir/adapter`. Never with a 4-bit (QLoRA) base: see `check_mergeable`.

A QLoRA base (`lora.quantize: 4bit`) is loaded and prepared by cloudtune.train.loading (`model_load_kwargs`,
`prepare_quantized`) before `apply_lora`; bitsandbytes' Linear4bit is a torch.nn.Linear, so target modules resolve
the same way.
"""

from __future__ import annotations

from pathlib import Path
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
    """The distinct leaf names of Linear-like modules (nn.Linear, GPT-2's Conv1D), heads excluded."""
    import torch

    names: set[str] = set()
    for full, module in model.named_modules():
        leaf = full.rsplit(".", 1)[-1]
        if not full or leaf in HEAD_NAMES or full.split(".")[0] in HEAD_NAMES:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
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


def apply_lora(model: Any, lora: Any, task: str, gradient_checkpointing: bool = False,
               modules_to_save: list[str] | None = None) -> Any:
    """Wrap `model` in a peft LoRA model: only the adapter trains, and the modules `modules_to_save` (for
    seq-classification, the new head and any other newly initialised part; peft's default `classifier`/`score`
    when None), which are trained in full and saved with the adapter."""
    from peft import get_peft_model

    config = lora_config(model, lora, task, modules_to_save)
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input with grad
    return get_peft_model(model, config)


def lora_config(model: Any, lora: Any, task: str, modules_to_save: list[str] | None = None) -> Any:
    """The peft `LoraConfig` of `train.lora` for `model` (its target modules resolved, `fan_in_fan_out` for GPT-2's
    Conv1D projections); `apply_lora` wraps the model with it, and the preference recipe hands it to TRL's trainer
    (`peft_config`), which then computes the reference with the adapter switched off."""
    from peft import LoraConfig, TaskType

    targets = resolve_target_modules(model, lora.target_modules)
    extra: dict[str, Any] = {"modules_to_save": list(modules_to_save)} if modules_to_save else {}
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none",
        task_type=TaskType.SEQ_CLS if task == "seq-classification" else TaskType.CAUSAL_LM,
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules()),
        **extra,
    )


def trainable_summary(model: Any) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} of {total:,} parameters trainable ({100.0 * trainable / max(total, 1):.2f}%)"


def save_classifier_config(model: Any, adapter_dir: Path) -> None:
    """Beside a seq-classification adapter, the classifier's config.json: num_labels, id2label/label2id and
    pad_token_id, which a reload passes to the base model (see the model card). Nothing for other tasks."""
    if str(getattr(model.peft_config["default"], "task_type", "")).endswith("SEQ_CLS"):
        model.get_base_model().config.save_pretrained(str(adapter_dir))


def check_mergeable(model: Any) -> None:
    """Refuse to merge an adapter into a 4-bit (QLoRA) base: the merged sum is quantized again, which rounds away
    most of the adapter's update, and the result would be a bitsandbytes checkpoint, not plain weights."""
    from cloudtune.train.loading import is_quantized

    if is_quantized(model):
        raise JobInputError("train.lora.merge: the base model is quantized (lora.quantize: 4bit), and merging into it "
                            "would quantize the adapter's update away; remove merge (the adapter is saved on its own) "
                            "and merge later into the bf16 base: PeftModel.from_pretrained(base, adapter).merge_and_unload()")


def save_lora(model: Any, model_dir: Path, merge: bool, base_name: str) -> list[str]:
    """Save the adapter (and merged weights when `merge`); returns the files written, relative to model_dir.

    A seq-classification adapter also gets the base model's `config.json` beside it, with what a reload needs
    that the base model's own config lacks: `num_labels`, `id2label`/`label2id` and `pad_token_id` (the trained
    head itself is in the adapter, as peft's modules_to_save)."""
    model_dir = Path(model_dir)
    if merge:
        check_mergeable(model)
    adapter_dir = model_dir / "adapter" if merge else model_dir
    model.peft_config["default"].base_model_name_or_path = base_name
    model.save_pretrained(str(adapter_dir))
    save_classifier_config(model, adapter_dir)
    if merge:
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(str(model_dir))
    return sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
