"""Built-in fine-tuning recipes. They read only a RuntimeContext, never a provider variable.

`run_recipe(ctx, train, checkpoint)` picks the recipe for `train.task` (causal-lm, seq-classification, text-to-image, preference).
Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import Any

from cloudtune.errors import JobInputError


def run_recipe(ctx: Any, train: Any, checkpoint: Any) -> dict[str, float]:
    """Run the built-in recipe named by `train.task`; returns its metrics (also written to metrics.json)."""
    if train.task == "seq-classification":
        from cloudtune.train.classification import run_seq_classification

        return run_seq_classification(ctx, train, checkpoint)
    if train.task == "causal-lm":
        from cloudtune.train.causal_lm import run_causal_lm

        return run_causal_lm(ctx, train, checkpoint)
    if train.task == "text-to-image":
        from cloudtune.train.text_to_image import run_text_to_image

        return run_text_to_image(ctx, train, checkpoint)
    if train.task == "preference":
        from cloudtune.train.preference import run_preference

        return run_preference(ctx, train, checkpoint)
    raise JobInputError(f"unknown train.task {train.task!r}; use causal-lm, seq-classification, text-to-image or "
                        f"preference")


__all__ = ["run_recipe"]
