"""The recipes' log lines: formats printed by rank 0, and the regexes cloud metric definitions are built from.

Stdlib only: launchers import METRIC_REGEXES on their plan path.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cloudtune.contracts.progress import format_duration

LOG_PREFIX = "[cloudtune]"

STEP_LOG_FORMAT = LOG_PREFIX + " step={step} loss={loss:.4f} learning_rate={learning_rate:.6g} epoch={epoch:.2f}"
"""The head of the step line (see `step_line`, which prints `step` as N/TOTAL and adds throughput and ETA).
learning_rate may use exponent notation (4e-05)."""

STEP_EXTRA_FORMAT = " tokens_per_second={tokens_per_second:.1f} eta_s={eta_s:.0f} eta={eta}"
"""The tail of the step line once throughput and ETA are known: input tokens per second (all ranks, over the last
logging window), seconds of training left as a plain number, and the same for people (`2m03s`)."""

PHASE_START_FORMAT = LOG_PREFIX + " {phase}: {what}"
PHASE_DONE_FORMAT = LOG_PREFIX + " {phase}: {what} done in {seconds:.1f}s"
"""A long phase (loading, tokenising, saving, uploading) says when it starts and how long it took."""

EVAL_LOG_FORMAT = LOG_PREFIX + " eval {when}: eval_loss={eval_loss:.4f} perplexity={perplexity:.2f}"
"""Printed before (`when`=before) and after (`when`=after) training, rank 0 only, e.g.
`[cloudtune] eval after: eval_loss=2.0100 perplexity=7.46`. perplexity may be `inf` for a huge loss."""

TRAIN_DONE_LOG_FORMAT = (
    LOG_PREFIX + " train done: train_loss={train_loss:.4f} train_runtime_s={train_runtime_s:.2f}"
    " tokens_per_second={tokens_per_second:.1f} global_step={global_step}"
)
"""Printed once training finishes, rank 0 only."""

CLS_EVAL_LOG_FORMAT = LOG_PREFIX + " eval {when}: eval_loss={eval_loss:.4f} accuracy={eval_accuracy:.4f} f1={eval_f1:.4f}"
"""The seq-classification recipe's eval line (`when` = before, after or step<N>); f1 is macro-F1."""

RESUME_LOG_FORMAT = LOG_PREFIX + " resuming from checkpoint {path} (step {step})"
CHECKPOINT_LOG_FORMAT = LOG_PREFIX + " checkpoint saved: {path} (step {step})"
"""Followed by ` in S.Ss`: the seconds from the start of the save to the checkpoint published whole."""
SIGTERM_LOG_FORMAT = LOG_PREFIX + " SIGTERM received: checkpoint saved at step {step}, exiting"

NUMBER = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan))"
METRIC_REGEXES: dict[str, str] = {
    "train_loss": r"\[cloudtune\] step=\d+(?:/\d+)? loss=" + NUMBER,
    "learning_rate": r"\[cloudtune\] step=\d+(?:/\d+)? .*learning_rate=" + NUMBER,
    "epoch": r"\[cloudtune\] step=\d+(?:/\d+)? .*epoch=" + NUMBER,
    "eval_loss": r"\[cloudtune\] eval \w+: eval_loss=" + NUMBER,
    "perplexity": r"\[cloudtune\] eval \w+: .*perplexity=" + NUMBER,
    "eval_accuracy": r"\[cloudtune\] eval \w+: .* accuracy=" + NUMBER,
    "eval_f1": r"\[cloudtune\] eval \w+: .* f1=" + NUMBER,
    "tokens_per_second": r"\[cloudtune\] train done: .*tokens_per_second=" + NUMBER,
}
"""Metric name -> regex with one capture group, matching the log lines above (for cloud metric definitions)."""

EARLY_STOP_LOG_FORMAT = LOG_PREFIX + " early stopping at step {step}: eval_loss did not improve on {best:.4f} for {patience} evaluations"

SIGTERM_EXIT_CODE = 143
LOGGING_STEPS = 10


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def say(line: str) -> None:
    if rank() == 0:
        print(line if line.startswith(LOG_PREFIX) else f"{LOG_PREFIX} {line}", flush=True)


def step_line(step: int, total: int | None, loss: float, learning_rate: float, epoch: float,
              tokens_per_second: float | None = None, eta_s: float | None = None) -> str:
    """The step log line, e.g. `[cloudtune] step=10/380 loss=2.3141 learning_rate=0.0004 epoch=0.50
    tokens_per_second=5210.4 eta_s=123 eta=2m03s` (step N of TOTAL optimizer steps; tokens per second; ETA in
    seconds). Throughput and ETA are left out until known; the total when unknown (None or <= 0)."""
    shown = f"{step}/{total}" if total and total > 0 else str(step)
    line = STEP_LOG_FORMAT.format(step=shown, loss=loss, learning_rate=learning_rate, epoch=epoch)
    if tokens_per_second is not None and eta_s is not None:
        line += STEP_EXTRA_FORMAT.format(tokens_per_second=tokens_per_second, eta_s=eta_s, eta=format_duration(eta_s))
    elif tokens_per_second is not None:
        line += f" tokens_per_second={tokens_per_second:.1f}"
    return line


@contextmanager
def phase(name: str, what: str) -> Iterator[None]:
    """Print `[cloudtune] NAME: WHAT` (rank 0), run the block, then `NAME: WHAT done in S.Ss` (seconds)."""
    say(PHASE_START_FORMAT.format(phase=name, what=what))
    began = time.monotonic()
    yield
    say(PHASE_DONE_FORMAT.format(phase=name, what=what, seconds=time.monotonic() - began))


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def eval_line(when: str, metrics: dict[str, float]) -> str:
    loss = float(metrics["eval_loss"])
    if "eval_accuracy" in metrics:
        return CLS_EVAL_LOG_FORMAT.format(when=when, eval_loss=loss, eval_accuracy=float(metrics["eval_accuracy"]),
                                          eval_f1=float(metrics.get("eval_f1", 0.0)))
    return EVAL_LOG_FORMAT.format(when=when, eval_loss=loss, perplexity=perplexity(loss))


def say_all(line: str) -> None:
    """Print `[cloudtune] LINE` on every rank (the entrypoint's own lines: each process says what it does)."""
    print(line if line.startswith(LOG_PREFIX) else f"{LOG_PREFIX} {line}", flush=True)
