"""Training plots as PNG files, drawn by matplotlib's Agg backend (no display needed).

`write_training_plots(model_dir, log_history)` writes `plots/loss.png` (train `loss` and `eval_loss` by step) and
`plots/learning_rate.png` into a model dir from a Trainer's `state.log_history`. Each figure is a
`matplotlib.figure.Figure` on its own `FigureCanvasAgg` (pyplot's global state and backend choice are not touched),
800 x 450 pixels (8 x 4.5 in at 100 dpi). matplotlib is in the `train` extra; in an image without it the plots are
skipped with a one-line note, never a failed job.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say

LOSS_COLOUR, EVAL_COLOUR, LR_COLOUR = "#1f77b4", "#d62728", "#2ca02c"  # matplotlib's tab:blue, tab:red, tab:green
SIZE_IN, DPI = (8.0, 4.5), 100
MARKED_POINTS = 60
"""A series with at most this many points also gets a square marker at each (a lone point would be invisible)."""
NO_MATPLOTLIB = ("plots: matplotlib is not installed in the training image, so plots/loss.png and "
                 "plots/learning_rate.png are not written (pip install matplotlib, or cloudtune[train])")

Series = tuple[str, list[tuple[float, float]], str]


def points(log_history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of every log entry that has a finite numeric `key` and a `step`."""
    out = []
    for entry in log_history:
        value, step = entry.get(key), entry.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)):
            if math.isfinite(value) and math.isfinite(step):
                out.append((float(step), float(value)))
    return out


def line_chart(path: Path, title: str, ylabel: str, series: list[Series]) -> None:
    """Write one line chart (each series: name, [(step, value)], colour) as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, pts, colour in series:
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        ax.plot(xs, ys, color=colour, linewidth=2, label=name,
                marker="s" if len(pts) <= MARKED_POINTS else None, markersize=5)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e4e4e4")
    ax.legend(loc="upper right")
    fig.savefig(path, format="png")


def write_training_plots(model_dir: Path, log_history: list[dict[str, Any]]) -> list[Path]:
    """Write plots/loss.png and plots/learning_rate.png into `model_dir`; a plot with no points is not written, and
    none is without matplotlib (one line says so). Returns the paths written."""
    charts = [("loss.png", "Loss", "loss", [("train loss", points(log_history, "loss"), LOSS_COLOUR),
                                             ("eval loss", points(log_history, "eval_loss"), EVAL_COLOUR)]),
              ("learning_rate.png", "Learning rate", "learning rate",
               [("learning rate", points(log_history, "learning_rate"), LR_COLOUR)])]
    charts = [(name, title, ylabel, [s for s in series if s[1]]) for name, title, ylabel, series in charts]
    charts = [c for c in charts if c[3]]
    if not charts:
        return []
    if importlib.util.find_spec("matplotlib") is None:
        say(NO_MATPLOTLIB)
        return []
    plots = Path(model_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, ylabel, series in charts:
        line_chart(plots / name, title, ylabel, series)
        written.append(plots / name)
    return written
