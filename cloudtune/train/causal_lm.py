"""The built-in causal-LM recipe: fine-tune a Hugging Face model (all weights, or a LoRA adapter) with the Trainer.

Data shapes (TRL's names): `text`, `prompt` + `completion` (loss on the completion only) and `messages` (loss on
the assistant turns only), loaded and tokenised by 🤗 Datasets; optional padding-free packing (see
`cloudtune.train.data`). Trains through the shared flow (`cloudtune.train.flow.run_training`).

Reads only the RuntimeContext and the spec. Works in one process or under torchrun (DDP; gloo on CPU);
only rank 0 prints, writes the model and writes metrics. Checkpoints are complete-or-absent (see
`cloudtune.train.checkpoints`); a restart resumes from the newest complete one; SIGTERM saves one and exits 143.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import phase, say
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.data import prepare_lm_data as prepare
from cloudtune.train.flow import device_type, fixed_length, lora_output_for, memory_settings, quiet_transformers, run_training
from cloudtune.train.loading import model_load_kwargs, prepare_quantized
from cloudtune.train.lora import apply_lora, trainable_summary
from cloudtune.train.models import (base_model_source, input_source, load_pretrained, model_shown, resolve_model_source,
                                    train_model_name)
from cloudtune.train.packing import CausalLMCollator


def prepare_lm_data(ctx: RuntimeContext, train: TrainSpec, tokenizer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load, encode (and pack) the train and eval inputs (`cloudtune.train.data`). Returns (train_ds, eval_ds,
    data_info)."""
    names = [n for n in (train.data.train, train.data.eval) if n is not None and n in ctx.inputs]  # not hf: datasets
    return prepare({n: Path(ctx.inputs[n]) for n in names}, {n: input_source(ctx, n) for n in names}, train, tokenizer)


def run_causal_lm(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune `train.model` on `ctx.inputs[train.data.train]`; write the model and metrics.json to ctx.model_dir.

    Returns the metrics (eval_* / perplexity_* keys only when there is an eval set).
    """
    from transformers import set_seed

    quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)

    source = resolve_model_source(ctx, train.model)
    device = device_type()
    with phase("loading model", source):
        tokenizer, model = load_pretrained(source, shown=model_shown(ctx, train), max_seq_len=hp.max_seq_len,
                                           base=base_model_source(ctx, train),
                                           load_kwargs=model_load_kwargs(train, train.task, device))
    train = lora_output_for(train, model)
    train = memory_settings(train, model, device)
    hp = train.hyperparameters
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    with phase("preparing data", f"input {train.data.train!r} (load, tokenise{', pack' if train.data.packing else ''})"):
        train_ds, eval_ds, info = prepare_lm_data(ctx, train, tokenizer)
    examples = "a stream of training examples" if info["train_examples"] is None else f"{info['train_examples']} training examples"
    say(f"data: {info['format']} format, {examples}"
        + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set")
        + f" (prepared in {info['prepare_seconds']:.1f} s)")
    if train.lora is not None:
        model = apply_lora(prepare_quantized(model, hp.gradient_checkpointing), train.lora, train.task,
                           hp.gradient_checkpointing)
        say(f"LoRA r={train.lora.r} alpha={train.lora.alpha} on {sorted(model.peft_config['default'].target_modules)}: "
            + trainable_summary(model))
    return run_training(ctx, train, checkpoint, processing_class=tokenizer, model=model, train_ds=train_ds, eval_ds=eval_ds,
                        collator=CausalLMCollator(tokenizer.pad_token_id, attn, pad_to=fixed_length(hp.max_seq_len)),
                        base_model=train_model_name(train, source, ctx),
                        data_info=info)
