"""The report page: one self-contained HTML file (inline CSS and SVG; no script, no font, nothing fetched).

Top to bottom: a verdict line (finished with the loss change / failed with its reason / running at step N, and the
number of health warnings), the health checks, the charts (cloudtune.report.figures), final metrics,
hyperparameters, data summary and cost. Every value that comes from the job (its name, log text, spec values) is
escaped with html.escape. Stdlib only.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

from cloudtune.report.facts import Facts
from cloudtune.report.figures import Figure
from cloudtune.report.audio import audio_samples_html
from cloudtune.report.samples import samples_html
from cloudtune.report.svg import fmt
from cloudtune.states import JobState

__all__ = ["render", "verdict", "human_duration"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1240px;color:#1c1c1c;
background:#fff;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;font-size:13px}.verdict{font-size:18px;padding:12px 16px;margin:16px 0;border-left:6px solid #888;
background:#f5f5f5}.verdict.ok{border-color:#2e7d32}.verdict.bad{border-color:#b3261e}.verdict.warn{border-color:#b26a00}
.verdict.run{border-color:#555}.charts{display:flex;flex-wrap:wrap;gap:16px}.chart-box{flex:0 0 auto}
.note{color:#555;font-size:13px;margin:4px 0 0}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 10px;text-align:left;vertical-align:top}th{background:#f5f5f5}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}ul{margin:4px 0;padding-left:20px}
li.health{color:#8a4b00}li.error{color:#b3261e}.cols{display:flex;flex-wrap:wrap;gap:0 48px}.cols>div{flex:1 1 520px}
"""


def human_duration(seconds: float | None) -> str:
    """`seconds` as e.g. `4.2 s`, `3 min 05 s`, `2 h 07 min`; `unknown` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _change(before: float, after: float) -> str:
    pct = f" ({(after - before) / before * 100:+.0f}%)" if before and math.isfinite(before) and math.isfinite(after) else ""
    return f"{fmt(before)} -> {fmt(after)}{pct}"


def _loss_change(f: Facts) -> tuple[str, bool] | None:
    """(`eval loss A -> B (-x%)`, whether it went down) from the final metrics or the log; None without a loss. A
    run that resumed another's checkpoint says the first figure is from where it resumed, not the base model's."""
    m, h = f.metrics, f.history
    since = f" since step {h.resumed_at}" if h.resumed_at else ""
    if isinstance(m.get("eval_loss_before"), (int, float)) and isinstance(m.get("eval_loss_after"), (int, float)):
        a, b = float(m["eval_loss_before"]), float(m["eval_loss_after"])
        return f"eval loss {_change(a, b)}{since}", b < a
    for label, points in (("eval loss", h.evals.get("eval_loss")), ("train loss", h.steps.get("loss"))):
        if points and len(points) >= 2:
            first = f" since step {int(points[0][0])}" if since else ""
            return f"{label} {_change(points[0][1], points[-1][1])}{first}", points[-1][1] < points[0][1]
    return None


def _steps_run(h: Any, steps: int) -> str:
    """` in N steps`, or for a run that resumed at step R ` in steps R-N (resumed at R)`."""
    if h.resumed_at:
        return f" in steps {h.resumed_at}-{steps} (resumed at step {h.resumed_at})"
    return f" in {steps} steps"


def verdict(f: Facts) -> tuple[str, str]:
    """(css class ok|warn|bad|run, the one-line verdict) a reader sees first."""
    h = f.history
    steps = h.last_step
    at = f"step {steps}" + (f"/{h.total_steps}" if h.total_steps else "") if steps is not None else "no step yet"
    change = _loss_change(f)
    if f.state == JobState.FAILED:
        reason = ((f.cause or {}).get("cause") or f.failure_reason
                  or (h.errors[-1] if h.errors else f"see `cloudtune logs {f.job_id}`"))
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        kind, text = "bad", f"failed at {at}: {reason}"
    elif f.state == JobState.SUCCEEDED:
        kind = "ok" if change is None or change[1] else "warn"
        text = "finished: " + (change[0] if change else "no loss in the log") + (_steps_run(h, steps) if steps else "")
        text += f", {human_duration(f.duration_s)}" if f.duration_s is not None else ""
    elif f.state == JobState.CANCELLED:
        kind, text = "warn", f"cancelled at {at}"
    else:
        loss = h.steps.get("loss")
        kind, text = "run", f"{f.state}: {at}" + (f", last train loss {fmt(loss[-1][1])}" if loss else "")
    if h.non_finite():
        kind, text = ("bad" if kind != "run" else kind), text + f"; the loss became NaN or infinite at step {int(h.non_finite()[0][0])}"
    alarms = len(h.notices) + len(f.warnings) + (1 if f.cause else 0)
    if alarms:
        kind = "warn" if kind == "ok" else kind
        text += f"; {alarms} finding(s) under Health checks"
    return kind, text


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("name", "value")) -> str:
    if not rows:
        return '<p class="note">none</p>'
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_value(v))}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{escape(head[0])}</th><th>{escape(head[1])}</th></tr>{body}</table>"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v)
    if isinstance(v, (dict, list)):
        import json

        return json.dumps(v, sort_keys=True)
    return str(v)


def _items(lines: list[str], css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return "<ul>" + "".join(f"<li{cls}>{escape(x)}</li>" for x in lines) + "</ul>"


def _health(f: Facts) -> str:
    h = f.history
    if not (h.notices or h.errors or h.events or f.warnings or h.non_finite() or f.cause):
        return '<p id="health-none">none raised</p>'
    out = [_items([f"cause ({f.cause.get('cause')}): {f.cause.get('line')}"], "error")] if f.cause else []
    if h.non_finite():
        out.append(_items([f"non-finite loss at step(s) {', '.join(str(int(p[0])) for p in h.non_finite()[:10])}"], "error"))
    out += [_items(h.notices + f.warnings, "health")] if h.notices or f.warnings else []
    out += [_items(h.errors, "error")] if h.errors else []
    out += [f'<p class="note">events</p>{_items(h.events)}'] if h.events else []
    return "".join(out)


def _figure(fig: Figure) -> str:
    note = f'<p class="note">{escape(fig.note)}</p>' if fig.note else ""
    return (f'<div class="chart-box" id="fig-{escape(fig.name)}"><h3 class="sub">{escape(fig.title)}</h3>'
            f'{fig.svg or ""}{note}</div>')


def _hyperparameters(f: Facts) -> str:
    train = f.spec.get("train") or {}
    if not train:
        command = f.spec.get("command")
        return f"<p>no built-in recipe: command <code>{escape(str(command))}</code></p>" if command else '<p class="note">not recorded</p>'
    model = train.get("model")
    source = (f.spec.get("inputs") or {}).get(model) if isinstance(model, str) else None
    rows: list[tuple[str, Any]] = [("task", train.get("task")), ("model", f"{model} ({source})" if source else model)]
    rows += [(f"lora.{k}", v) for k, v in (train.get("lora") or {}).items()]
    rows += list((train.get("hyperparameters") or {}).items())
    return _table([r for r in rows if r[1] is not None])


def _data(f: Facts) -> str:
    inputs = [(k, v) for k, v in (f.spec.get("inputs") or {}).items()]
    parts = [_items(f.history.data)] if f.history.data else ['<p class="note">no data line in the log</p>']
    if f.card_data:
        parts.append('<p class="note">from the model card</p>' + _items([x.lstrip("- ") for x in f.card_data]))
    parts.append('<p class="note">inputs</p>' + _table(inputs, ("input", "source")))
    return "".join(parts)


def _cost(f: Facts) -> str:
    price = "unknown" if f.usd_per_hour is None else f"${f.usd_per_hour:.2f}/h ({f.cost_basis})"
    cost = f.cost_usd
    if f.provider == "local" and not f.usd_per_hour:
        total = "no cloud cost: a local job"
    else:
        total = "unknown" if cost is None else f"about ${cost:.2f}"
    rows = [("instance", f"{f.instance_type or 'unknown'} x {f.instance_count}"), ("price", price),
            ("duration", human_duration(f.duration_s) + (f" ({f.duration_basis})" if f.duration_basis else "")),
            ("cost", total)]
    return _table(rows, ("what", "value")) + ('<p class="note">An estimate: the duration times the price in the '
                                              "job's plan (which covers all its instances), not the cloud's bill.</p>")


def render(f: Facts, figs: list[Figure]) -> str:
    """The whole page for the job's Facts and Figures, as one HTML string."""
    kind, text = verdict(f)
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(f.generated_at))
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(f.created_at))
    metrics = sorted((k, v) for k, v in f.metrics.items())
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>cloudtune report: {escape(f.name)} ({escape(f.job_id)})</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(f.name)}</h1><p class=\"sub\">job <code>{escape(f.job_id)}</code> on {escape(f.provider)}, "
        f"{escape(f.state)}; submitted {started}; report made {made}</p>",
        f'<p class="verdict {kind}" id="verdict">{escape(text)}</p>',
        f'<h2>Health checks</h2><div id="health">{_health(f)}</div>',
        '<h2>Training</h2><div class="charts">' + "".join(_figure(x) for x in figs) + "</div>",
        (f'<h2>Validation samples</h2><div id="samples">{samples_html(f.samples)}</div>' if f.samples else ""),
        audio_samples_html(f.model_uri if f.state == JobState.SUCCEEDED else None),
        f'<div class="cols"><div><h2>Final metrics</h2><div id="metrics">{_table(metrics, ("metric", "value"))}</div>',
        f'<h2>Cost</h2><div id="cost">{_cost(f)}</div></div>',
        f'<div><h2>Hyperparameters</h2><div id="hyperparameters">{_hyperparameters(f)}</div>',
        f'<h2>Data</h2><div id="data">{_data(f)}</div></div></div>',
        f'<p class="sub">{f.history.lines} log line(s) read. Made by <code>cloudtune report</code>.</p></body></html>',
    ])
