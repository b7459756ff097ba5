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

from cloudtune.data.lora import resolve_target_modules
from cloudtune.errors import JobInputError
from cloudtune.train.loading import is_quantized

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
