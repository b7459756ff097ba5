"""The built-in seq-classification recipe: AutoModelForSequenceClassification on `text` + `label` records.

Labels are names or integer ids (`cloudtune.data.labels`); names are saved as id2label/label2id in the config. Metrics before/after training:
eval_loss, eval_accuracy and eval_f1 (macro-F1). GPT-2 style models get a pad token (EOS) and
`config.pad_token_id`, which their classification head uses to find each row's last real token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say
from cloudtune.data.labels import label_id, label_mapping
from cloudtune.data.records import read_records, where_field
from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.flow import (device_type, fixed_length, lora_output_for, memory_settings, quiet_transformers,
                                  run_training)
from cloudtune.train.loading import model_load_kwargs, prepare_quantized
from cloudtune.train.lora import apply_lora, trainable_summary
from cloudtune.train.models import (base_model_source, input_source, load_pretrained, model_shown, resolve_model_source,
                                    train_model_name)


def _records(path: Path, train: TrainSpec, shown: str | None = None) -> list[tuple[str, str, Any]]:
    """(where, text, label) of every record of the input at `path` (named `shown` in errors)."""
    data = train.data
    out = []
    for where, rec in read_records(path, data.text_field, shown):
        text = where_field(rec, data.text_field, where, "train.data.text_field")
        label = where_field(rec, data.label_field, where, "train.data.label_field", kind=(str, int, float))
        out.append((where, text, label))
    return out


class ClassificationDataset:
    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i]


def encode(rows: list[tuple[str, str, Any]], tokenizer: Any, max_seq_len: int, to_id: Any) -> ClassificationDataset:
    examples = []
    for where, text, label in rows:
        ids = list(tokenizer(text, truncation=True, max_length=max_seq_len, add_special_tokens=True)["input_ids"])
        if not ids:
            raise JobInputError(f"{where}: the text produced no token")
        examples.append({"input_ids": ids, "labels": to_id(label, where)})
    return ClassificationDataset(examples)


class ClassificationCollator:
    """Padding to the batch's longest text (or to `pad_to`, for fixed shapes on PyTorch/XLA)."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max([len(f["input_ids"]) for f in features] + [self.pad_to or 0])
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            input_ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention[row, : len(f["input_ids"])] = 1
        labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def accuracy_and_macro_f1(predictions: list[int], references: list[int]) -> tuple[float, float]:
    """Accuracy and macro-F1 (mean F1 over the classes present in the references or the predictions)."""
    if not references:
        return 0.0, 0.0
    correct = sum(p == r for p, r in zip(predictions, references))
    f1s = []
    for c in sorted(set(references) | set(predictions)):
        tp = sum(p == c and r == c for p, r in zip(predictions, references))
        fp = sum(p == c and r != c for p, r in zip(predictions, references))
        fn = sum(p != c and r == c for p, r in zip(predictions, references))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return correct / len(references), sum(f1s) / len(f1s)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    import numpy as np

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    preds = np.asarray(logits).argmax(-1).reshape(-1).tolist()
    refs = np.asarray(eval_pred.label_ids).reshape(-1).tolist()
    accuracy, f1 = accuracy_and_macro_f1([int(p) for p in preds], [int(r) for r in refs])
    return {"accuracy": accuracy, "f1": f1}


def run_seq_classification(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune a sequence classifier on `ctx.inputs[train.data.train]`; write model, metrics.json and README.md."""
    from transformers import set_seed

    quiet_transformers()
    data, hp = train.data, train.hyperparameters
    set_seed(hp.seed)
    train_rows = _records(Path(ctx.inputs[data.train]), train, input_source(ctx, data.train))
    eval_rows = _records(Path(ctx.inputs[data.eval]), train, input_source(ctx, data.eval)) if data.eval is not None else None
    names, mapping, n = label_mapping([(w, label) for w, _, label in train_rows], data.labels)

    def to_id(value: Any, where: str) -> int:
        return label_id(value, where, names, mapping, n, data.label_field)

    source = resolve_model_source(ctx, train.model)
    say(f"loading model {source} for sequence classification ({n} labels"
        + (f": {', '.join(names)}" if names else ", numeric ids") + ")")
    device = device_type()
    tokenizer, model = load_pretrained(source, "seq-classification", n, dict(enumerate(names)) if names else None,
                                       shown=model_shown(ctx, train), max_seq_len=hp.max_seq_len,
                                       base=base_model_source(ctx, train),
                                       load_kwargs=model_load_kwargs(train, train.task, device))
    train = memory_settings(lora_output_for(train, model), model, device)
    hp = train.hyperparameters
    train_ds = encode(train_rows, tokenizer, hp.max_seq_len, to_id)
    eval_ds = encode(eval_rows, tokenizer, hp.max_seq_len, to_id) if eval_rows is not None else None
    info: dict[str, Any] = {"train_examples": len(train_ds), "labels": names or [f"{i}" for i in range(n)]}
    if eval_ds is not None:
        info["eval_examples"] = len(eval_ds)
    say(f"data: {len(train_ds)} training examples" + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set"))
    if train.lora is not None:
        heads = getattr(model, "ct_new_modules", None) or None
        model = apply_lora(prepare_quantized(model, hp.gradient_checkpointing), train.lora, train.task,
                           hp.gradient_checkpointing, modules_to_save=heads)
        say(f"LoRA r={train.lora.r} alpha={train.lora.alpha}, trained in full: "
            f"{', '.join(model.peft_config['default'].modules_to_save or [])}: " + trainable_summary(model))
    return run_training(ctx, train, checkpoint, processing_class=tokenizer, model=model, train_ds=train_ds, eval_ds=eval_ds,
                        collator=ClassificationCollator(tokenizer.pad_token_id, fixed_length(hp.max_seq_len)),
                        base_model=train_model_name(train, source, ctx),
                        data_info=info, compute_metrics=compute_metrics)
