"""Which charts a report draws from a History, and the notes that stand in for a chart the log cannot give.

Charts (x is the optimizer step): loss (train and eval together), learning rate, throughput (every step-line key
that reads as a rate, e.g. `tokens_per_second`, `tokens/s`), eval metrics other than loss and perplexity
(accuracy, f1), and one chart per other numeric step-line key (a field added to the step line later shows up here
without a change). Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudtune.report.history import History
from cloudtune.report.svg import COLORS, Series, fmt, line_chart

__all__ = ["Figure", "figures", "is_rate"]

_RATE = re.compile(r"(per_second|per_sec|/s|_per_s|throughput)$", re.IGNORECASE)
_KNOWN = {"loss", "learning_rate", "lr", "epoch", "eta_s"}  # drawn elsewhere, or not worth a chart (the ETA)
_EVAL_SKIP = {"eval_loss", "perplexity"}


@dataclass(frozen=True)
class Figure:
    """One section's chart: `svg` the `<svg>` element (None when there is nothing to draw), `note` a plain-text
    remark shown under it (unescaped: the page escapes it)."""

    name: str
    title: str
    svg: str | None
    note: str = ""


def is_rate(key: str) -> bool:
    """Whether a step-line key names a throughput (tokens/s, samples_per_second, ...)."""
    return bool(_RATE.search(key))


def _loss(h: History) -> Figure:
    series = []
    if h.steps.get("loss"):
        series.append(Series("train loss", h.steps["loss"], COLORS[0]))
    if h.evals.get("eval_loss"):
        series.append(Series("eval loss", h.evals["eval_loss"], COLORS[1]))
    bad = h.non_finite()
    note = (f"{len(bad)} non-finite loss value(s) (NaN or infinite) not drawn, first at step {int(bad[0][0])}"
            if bad else "")
    if not series:
        return Figure("loss", "Loss", None, "no loss in the log yet")
    return Figure("loss", "Loss", line_chart("loss", "Train and eval loss by step", series), note)


def _learning_rate(h: History) -> Figure:
    points = h.steps.get("learning_rate") or h.steps.get("lr")
    if not points:
        return Figure("learning_rate", "Learning rate", None, "no learning rate in the log")
    return Figure("learning_rate", "Learning rate",
                  line_chart("learning_rate", "Learning rate by step", [Series("learning rate", points, COLORS[2])]))


def _throughput(h: History, unit: str) -> Figure:
    keys = [k for k in h.steps if is_rate(k)]
    average = h.done.get("tokens_per_second")
    note = f"average over the run: {fmt(average)} {unit}/s (the `train done` line)" if average is not None else ""
    if unit != "tokens":
        note = "; ".join(x for x in (note, f"`tokens_per_second` counts {unit} for this task") if x)
    if not keys:
        return Figure("throughput", "Throughput", None,
                      "; ".join(x for x in ("no per-step throughput in this log", note) if x))
    series = [Series(k, h.steps[k], COLORS[(3 + i) % len(COLORS)]) for i, k in enumerate(keys)]
    return Figure("throughput", "Throughput", line_chart("throughput", "Throughput by step", series), note)


def _eval_metrics(h: History) -> list[Figure]:
    keys = [k for k in h.evals if k not in _EVAL_SKIP]
    if not keys:
        return []
    series = [Series(k, h.evals[k], COLORS[(4 + i) % len(COLORS)]) for i, k in enumerate(keys)]
    return [Figure("eval_metrics", "Eval metrics", line_chart("eval_metrics", "Eval metrics by step", series))]


def _others(h: History) -> list[Figure]:
    out = []
    for i, key in enumerate(k for k in h.steps if k not in _KNOWN and not is_rate(k)):
        series = [Series(key, h.steps[key], COLORS[(5 + i) % len(COLORS)])]
        out.append(Figure(f"step_{key}", key, line_chart(f"step_{key}", f"{key} by step", series)))
    return out


def figures(h: History, unit: str = "tokens") -> list[Figure]:
    """The report's figures in page order: loss, learning rate, throughput, then eval metrics and other series.
    `unit`: what the job's throughput counts (cloudtune.contracts.progress.throughput_unit)."""
    return [_loss(h), _learning_rate(h), _throughput(h, unit), *_eval_metrics(h), *_others(h)]
