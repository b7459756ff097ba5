"""The built-in fine-tuning recipes: one shared training flow, and one small module per recipe.

Importing this package imports neither torch nor transformers (the registry names modules; a recipe's module is
imported when its task runs). Recipes read only a RuntimeContext and the spec, never a provider variable; `train/`
imports the bottom layer (errors, spec, contracts, data rules) and `cloudtune.runtime`, never the plan side
(preflight, jobinputs, kit), the app (report, api, cli) or the entrypoint.

Adding a recipe: one module here, whose entry function is `run_<name>(ctx, train, checkpoint) -> metrics`, plus
one line in `RECIPES`; its torch-free data rules (file checks, record shapes) go to `cloudtune.data`, so the
plan-time checks can use them too.

The shared flow (a recipe calls these; see each function's docstring):

* `cloudtune.train.models`: where the model is and what the user called it (`resolve_model_source(ctx, name)`,
  `model_shown(ctx, train)`, `base_model_source`, `train_model_name`), and `load_pretrained(source, task, ...)`
  -> (tokenizer, model), checked like the plan-time checks, a LoRA adapter merged onto its base.
* `cloudtune.train.flow`: `quiet_transformers()`, `device_type()`, `fixed_length(max_seq_len)`,
  `memory_settings(train, model, device)`, `lora_output_for(train, model)`, and the flow itself::

      run_training(ctx, train, checkpoint, *, model, processing_class, train_ds, eval_ds, collator, base_model,
                   data_info, compute_metrics=None, trainer_class=CloudtuneTrainer, save_model=None,
                   perplexity=True) -> dict[str, float]

  It builds the Trainer (`trainer_class`: `cloudtune.train.trainer.CloudtuneTrainer` or a recipe's subclass of it,
  e.g. one overriding `compute_loss`, as TRL's trainers subclass `transformers.Trainer`) with the arguments from
  the spec (`cloudtune.train.arguments.training_arguments`) and the callbacks (`cloudtune.train.callbacks`: step and
  eval log lines, the status file and TensorBoard scalars, SIGTERM -> checkpoint + exit 143, early stopping, health:
  divergence -> exit 66); resumes from the newest complete checkpoint all ranks agree on; evaluates before and after
  training when `eval_ds` is given (`compute_metrics` adds eval_* metrics; `perplexity` adds perplexity_* from
  eval_loss); then rank 0 writes to ctx.model_dir (`cloudtune.train.outputs`): the model (full weights, LoRA
  adapter or merged; `save_model(trainer, model_dir)` replaces this step, e.g. a diffusers pipeline's
  `save_pretrained`), `processing_class.save_pretrained` (tokenizer, image processor or processor), metrics.json,
  plots/*.png (`cloudtune.train.plots`) and README.md (the model card; `data_info` feeds it: `train_examples`,
  `eval_examples`, `format`, `labels`). Returns the metrics (train_loss, train_runtime_s, tokens_per_second,
  global_step, eval_*_before/after, ...), which the entrypoint prints.
* Log lines: `cloudtune.contracts.logfmt` (`say`, `phase`); checkpoints: `cloudtune.train.checkpoints`.
"""

from __future__ import annotations

import importlib
from typing import Any

from cloudtune.errors import JobInputError

RECIPES: dict[str, tuple[str, str]] = {
    "causal-lm": ("cloudtune.train.causal_lm", "run_causal_lm"),
    "seq-classification": ("cloudtune.train.classification", "run_seq_classification"),
    "text-to-image": ("cloudtune.train.text_to_image", "run_text_to_image"),
    "text-to-audio": ("cloudtune.train.text_to_audio", "run_text_to_audio"),
    "preference": ("cloudtune.train.preference", "run_preference"),
}
"""`train.task` -> (module, entry function `(ctx, train, checkpoint) -> metrics`)."""


def run_recipe(ctx: Any, train: Any, checkpoint: Any) -> dict[str, float]:
    """Run the built-in recipe named by `train.task`; returns its metrics (also written to metrics.json)."""
    if train.task not in RECIPES:
        raise JobInputError(f"unknown train.task {train.task!r}; use one of {', '.join(RECIPES)}")
    module, function = RECIPES[train.task]
    return getattr(importlib.import_module(module), function)(ctx, train, checkpoint)


__all__ = ["RECIPES", "run_recipe"]
