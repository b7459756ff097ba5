"""`cloudtune report SWEEP`: one self-contained HTML page of a sweep, whoever ran it.

Charts (inline SVG, cloudtune.report.svg): the objective against each parameter (one point per trial that reported
it; a log-scaled range is drawn against log10 of the value, a choice of texts against its position in the list), and
the trials' curves (each trial's intermediate objective values against the optimizer step). A table lists the trials
best first, as `cloudtune status SWEEP` does. The trials are the provider-neutral list of cloudtune.sweeptrials.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

from cloudtune.report.figures import Figure
from cloudtune.report.html import CSS
from cloudtune.report.svg import COLORS, Series, fmt, line_chart


def _number(value: Any, choices: list[Any] | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float(choices.index(value)) if choices and value in choices else None
    return float(value)


def parameter_figures(trials: list[dict[str, Any]], ranges: dict[str, dict[str, Any]], metric: str) -> list[Figure]:
    """One scatter per parameter: the objective (y) against the parameter's value (x)."""
    figs = []
    for name in sorted({k for t in trials for k in t["parameters"]}):
        rng = ranges.get(name) or {}
        log = bool(rng.get("loguniform")) or bool(rng.get("log"))
        choices = rng.get("choice")
        points = []
        for t in trials:
            x, y = _number(t["parameters"].get(name), choices), t.get("objective")
            if x is None or not isinstance(y, (int, float)) or not math.isfinite(y) or (log and x <= 0):
                continue
            points.append((math.log10(x) if log else x, float(y)))
        label = f"log10({name})" if log else name
        if choices and any(not isinstance(c, (int, float)) or isinstance(c, bool) for c in choices):
            label += " (position in " + ", ".join(str(c) for c in choices) + ")"
        svg = line_chart(f"objective-{name}", f"{metric} against {name}",
                         [Series(metric, sorted(points), COLORS[0], line=False)], x_label=label) if points else None
        figs.append(Figure(f"objective-{name}", f"{metric} against {name}", svg,
                           "" if points else "no trial has reported its objective yet"))
    return figs


def curves_figure(trials: list[dict[str, Any]], metric: str) -> Figure:
    """Each trial's intermediate values against the step (the values early stopping compared)."""
    series = [Series(f"#{t['number']}", [(float(s), float(v)) for s, v in t.get("intermediate") or []],
                     COLORS[i % len(COLORS)], dashed=t["state"] == "pruned")
              for i, t in enumerate(sorted(trials, key=lambda t: t["number"])) if t.get("intermediate")]
    svg = line_chart("trial-curves", f"{metric} during each trial", series) if series else None
    return Figure("trial-curves", f"{metric} during each trial (pruned trials dashed)", svg,
                  "" if series else "no trial reported intermediate values (set hyperparameters.eval_every)")


def _trial_rows(trials: list[dict[str, Any]], metric: str) -> str:
    names = sorted({k for t in trials for k in t["parameters"]})
    head = "".join(f"<th>{escape(h)}</th>" for h in ["#", *names, "state", metric, "cost", "job"])
    rows = []
    for t in trials:
        cells = [str(t["number"]), *(fmt(v) if isinstance(v, float) else str(v) for v in
                                     (t["parameters"].get(n, "-") for n in names)), t["state"],
                 fmt(t["objective"]) if isinstance(t.get("objective"), (int, float)) else "-",
                 f"${t['cost_usd']:.2f}" if isinstance(t.get("cost_usd"), (int, float)) else "-", t.get("job_id") or "-"]
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_sweep(info: dict[str, Any], ranges: dict[str, dict[str, Any]]) -> tuple[str, list[Figure]]:
    """The page of a sweep's `info` (cloudtune.api.Job.info of a sweep) and its figures."""
    trials, objective = info.get("trials") or [], info["objective"]
    figs = parameter_figures(trials, ranges, objective["metric"]) + [curves_figure(trials, objective["metric"])]
    best = info.get("best_trial")
    verdict = (f"best: trial {best['number']} ({best['job_id']}), {objective['metric']}={fmt(best['objective'])}"
               if best else "no trial has finished with its objective yet")
    counts = ", ".join(f"{n} {s}" for s, n in sorted((info.get("trial_counts") or {}).items())) or "no trials"
    boxes = "".join(f'<div class="chart-box" id="fig-{escape(f.name)}"><h3 class="sub">{escape(f.title)}</h3>'
                    f'{f.svg or ""}' + (f'<p class="note">{escape(f.note)}</p>' if f.note else "") + "</div>" for f in figs)
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    page = "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>cloudtune sweep report: {escape(info['name'])} ({escape(info['job_id'])})</title><style>{CSS}</style>",
        f"</head><body><h1>{escape(info['name'])}: sweep</h1><p class=\"sub\">sweep <code>{escape(info['job_id'])}</code>"
        f" on {escape(info['provider'])}, {escape(info['state'])} ({escape(counts)}); {objective['goal']} "
        f"{escape(objective['metric'])}; report made {made}</p>",
        f'<p class="verdict" id="verdict">{escape(verdict)}</p>',
        f'<h2>Trials, best first</h2>{_trial_rows(trials, objective["metric"])}',
        f'<h2>Objective</h2><div class="charts">{boxes}</div>',
        '<p class="sub">Made by <code>cloudtune report</code>.</p></body></html>',
    ])
    return page, figs
