"""`train_loss`: the mean per-step training loss over the whole training, the same for the same training whatever
its layout (nodes x batch) and across a resume.

The Trainer (transformers 5.x `_finalize_training`) adds the loss of the steps since its last log as THIS rank's
own sum (`_tr_loss.item()`, not gathered across ranks), and divides by the steps of this run only (after a resume
the steps before it are left out): 2 nodes x batch 2 then report rank 0's half-batch loss for the last steps,
and a resumed job the mean of its last part (transformers#37474, trl#3538 describe the same trap). The figure here
is built from what every rank agrees on instead: each logged window's loss (the Trainer all-gathers and averages
it across ranks before logging; with `average_tokens_across_devices` the mean over ranks is the loss of the whole
batch), read back from `state.log_history` (saved in every checkpoint), plus the remainder since the last log,
averaged across ranks, over the steps those cover.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def logged_loss_sum(log_history: Iterable[Mapping[str, Any]], up_to_step: int) -> tuple[float, int]:
    """(sum of per-step losses, steps covered) of the logged windows ending at or before `up_to_step`.

    A log entry {"loss": L, "step": s} is the mean loss of the steps after the previous loss entry up to s, so it
    stands for L * (s - previous) summed per-step losses. Entries without "loss" (evaluations, the summary) are
    skipped; a repeated or backward step (a log written twice around a resume) adds nothing."""
    total, previous = 0.0, 0
    for entry in log_history:
        step, loss = entry.get("step"), entry.get("loss")
        if not isinstance(step, int) or not isinstance(loss, (int, float)) or step > up_to_step or step <= previous:
            continue
        total += float(loss) * (step - previous)
        previous = step
    return total, previous


def whole_training_loss(log_history: Iterable[Mapping[str, Any]], initial_step: int, run_logged_sum: float,
                        remainder_mean: float, global_step: int) -> float:
    """The mean per-step loss of steps 1..`global_step`.

    `initial_step`: the step this run resumed from (0 for a fresh run); `run_logged_sum`: the per-step losses this
    run logged (the Trainer's `_total_loss_scalar`, rank-averaged per window); `remainder_mean`: the sum of the
    per-step losses since the last log, averaged across ranks. The steps before the resume count from the logged
    windows in `log_history` up to `initial_step`; steps that were never logged before it (a checkpoint between
    two logs) are left out of both the sum and the count rather than guessed."""
    before, covered = logged_loss_sum(log_history, initial_step)
    steps = covered + (global_step - initial_step)
    return (before + run_logged_sum + remainder_mean) / max(steps, 1)
