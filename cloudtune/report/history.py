"""A job's history read back from its log lines: the series a report draws, and the facts it states.

The source is what every provider can already fetch (`cloudtune logs JOB`): the `[cloudtune] ...` lines of
cloudtune.contracts.logfmt. Parsing is general and tolerant: any `key=value` pair with a numeric value on a step line
becomes a series (so a new field such as `tokens_per_second=...` appears without a change here), `step=N/TOTAL`
gives the step and the total, and lines not recognised are skipped. A prefix before `[cloudtune]` (a timestamp
added by a cloud's log service, a host name) is ignored. Stdlib only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "parse_log", "parse_number"]

PREFIX = "[cloudtune]"
_STEP = re.compile(r"^step[= ](\d+)(?:\s*/\s*(\d+))?(?:\s|$)")
_EVAL = re.compile(r"^eval (\w+):\s*(.*)$")
_PAIR = re.compile(r"(?:^|\s)([A-Za-z_][\w/.\-]*)=(\S+)")
_NUMBER = re.compile(r"^[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan|infinity)$", re.IGNORECASE)
_NOTICE = ("warning:", "health:")
_RESUMED = re.compile(r"^resuming from checkpoint .* \(step (\d+)\)$")  # contracts.logfmt.RESUME_LOG_FORMAT
_EVENTS = ("resuming from checkpoint", "early stopping", "SIGTERM received", "torchrun:")

Point = tuple[float, float]
"""(optimizer step, value) of one series."""


def parse_number(text: str) -> float | None:
    """`text` as a float (`inf`, `nan` included), or None when it is not a plain number (`12s`, `0:05:00`)."""
    text = text.strip().rstrip(",;")
    if not _NUMBER.match(text):
        return None
    return float(text)


def pairs(text: str) -> dict[str, str]:
    """The `key=value` pairs of one log line's text, in order (values are whitespace-free tokens)."""
    return {m.group(1): m.group(2).rstrip(",;") for m in _PAIR.finditer(text)}


@dataclass
class History:
    """What a job's log says about its training.

    `steps`: series name -> [(step, value)] from the step lines (`loss`, `learning_rate`, `epoch`, and any other
    numeric key); `evals`: metric name -> [(step, value)] from the eval lines (`before` is step 0, `after` the last
    step); `total_steps`: the N of `step=n/N` when the log gives it; `done`: the numbers of the `train done:` line;
    `metrics`: the job's final `metrics {...}` object; `data`: the data lines (`data: ...`, `packing: ...`);
    `notices`: `warning:` and `health:` lines; `errors`: `error:` lines; `events`: resume, early stop, SIGTERM and
    torchrun failure lines. Texts are the line after `[cloudtune] `, unescaped user data."""

    steps: dict[str, list[Point]] = field(default_factory=dict)
    evals: dict[str, list[Point]] = field(default_factory=dict)
    total_steps: int | None = None
    done: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lines: int = 0

    @property
    def resumed_at(self) -> int | None:
        """The step this log's run began at when it resumed another run's checkpoint and holds no step before it
        (`cloudtune launch --resume`, or a log that begins at a retry); None for a run that starts at step 0."""
        found = [int(m.group(1)) for e in self.events if (m := _RESUMED.search(e))]
        seen = [p[0] for s in (*self.steps.values(), *self.evals.values()) for p in s if p[0] > 0]
        if not found or found[0] <= 0 or (seen and min(seen) < found[0]):
            return None
        return found[0]

    @property
    def last_step(self) -> int | None:
        """The highest step any step or eval line, or the `train done:` line, names; None before the first."""
        seen = [p[0] for s in (*self.steps.values(), *self.evals.values()) for p in s]
        if "global_step" in self.done:
            seen.append(self.done["global_step"])
        return int(max(seen)) if seen else None

    def non_finite(self) -> list[Point]:
        """The (step, loss) points whose train or eval loss is NaN or infinite."""
        points = self.steps.get("loss", []) + self.evals.get("eval_loss", [])
        return [p for p in points if not math.isfinite(p[1])]


def _add(series: dict[str, list[Point]], name: str, step: float, value: float) -> None:
    points = series.setdefault(name, [])
    if points and points[-1][0] == step:  # the same step twice (an `after` eval at the final step): keep the last
        points[-1] = (step, value)
    else:
        points.append((step, value))


def _step_line(hist: History, text: str) -> bool:
    m = _STEP.match(text)
    if not m:
        return False
    step = int(m.group(1))
    if m.group(2):
        hist.total_steps = int(m.group(2))
    for key, raw in pairs(text[m.end():]).items():
        value = parse_number(raw)
        if value is not None:
            _add(hist.steps, key, step, value)
    return True


def _eval_line(hist: History, text: str) -> bool:
    m = _EVAL.match(text)
    if not m:
        return False
    when = m.group(1)
    if when == "before":
        step: float | None = 0
    elif when.startswith("step") and when[4:].isdigit():
        step = int(when[4:])
    else:  # `after` (or a phase not known yet): at the last step seen, placed when the log is read whole
        step = None
    for key, raw in pairs(m.group(2)).items():
        value = parse_number(raw)
        if value is not None:
            hist.evals.setdefault(key, [])
            if step is None:
                hist.evals[key].append((-1.0, value))  # placeholder: fixed by _place_after
            else:
                _add(hist.evals, key, step, value)
    return True


def _place_after(hist: History) -> None:
    """Put the `after` evaluations (placeholder step -1) at the last step, replacing an eval at that same step."""
    steps = [p[0] for s in hist.steps.values() for p in s] + [p[0] for s in hist.evals.values() for p in s if p[0] >= 0]
    if "global_step" in hist.done:
        steps.append(hist.done["global_step"])
    last = max(steps) if steps else 0.0
    for key, points in hist.evals.items():
        kept: list[Point] = []
        for step, value in points:
            if step < 0:
                kept = [p for p in kept if p[0] != last] + [(last, value)]
            else:
                kept.append((step, value))
        hist.evals[key] = sorted(kept, key=lambda p: p[0])


def _other_line(hist: History, text: str) -> None:
    if text.startswith("train done:"):
        for key, raw in pairs(text[len("train done:"):]).items():
            value = parse_number(raw)
            if value is not None:
                hist.done[key] = value
    elif text.startswith("metrics {"):
        try:
            loaded = json.loads(text[len("metrics "):])
        except ValueError:
            return
        if isinstance(loaded, dict):
            hist.metrics = loaded
    elif text.startswith(("data:", "packing:")):
        hist.data.append(text)
    elif text.startswith(_NOTICE):
        hist.notices.append(text)
    elif text.startswith("error:"):
        hist.errors.append(text)
    elif text.startswith(_EVENTS):
        hist.events.append(text)


def parse_log(lines: Iterable[str]) -> History:
    """Read a job's log lines (as `cloudtune logs` prints them, with or without newlines) into a History."""
    hist = History()
    for raw in lines:
        for line in raw.splitlines() or [""]:
            hist.lines += 1
            at = line.find(PREFIX)
            if at < 0:
                continue
            text = line[at + len(PREFIX):].strip()
            if not _step_line(hist, text) and not _eval_line(hist, text):
                _other_line(hist, text)
    _place_after(hist)
    return hist
