"""Line charts as inline SVG, drawn by our own code: no plotting library, no script, no network.

Each chart is one `<svg class="chart" data-chart=NAME>` with axes and ticks (`<g class="axes">`), one
`<path class="series" data-series=NAME>` per series (plus round markers where points are few, and a dashed
vertical line labelled `nan`/`inf` at each step whose value is not finite), and a legend.
Coordinates are in CSS pixels of the chart's own viewBox. Every text that reaches the SVG is escaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

__all__ = ["COLORS", "Series", "line_chart", "nice_ticks", "fmt"]

COLORS: tuple[str, ...] = ("#1f6fd1", "#e0452b", "#1e9e4a", "#e08a00", "#8a3fd1", "#0a9fa8")
"""Series colours, in order: saturated, far from the page's black, greys and white."""

WIDTH, HEIGHT = 600, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 44
MARKERS_UP_TO = 60


@dataclass(frozen=True)
class Series:
    """One line: `points` are (x, y) in data units (x the optimizer step); non-finite y values are not drawn."""

    name: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False
    line: bool = True  # False: markers only (a scatter of separate trials)


def fmt(value: float) -> str:
    """A short label for a number: 4 significant digits, exponent notation for very small or large magnitudes."""
    if value == 0 or not math.isfinite(value):
        return str(value if value else 0)
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.2g}"
    return f"{value:.4g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 x 10^k); lo == hi is widened."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _scales(series: list[Series]) -> tuple[list[float], list[float]]:
    """Tick values of the x and y axes (x from 0 when every x is >= 0; x spans non-finite y values too)."""
    points = [p for s in series for p in s.points if math.isfinite(p[0])]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points if math.isfinite(p[1])] or [0.0, 1.0]
    x_lo = 0.0 if min(xs) >= 0 else min(xs)
    return nice_ticks(x_lo, max(xs)), nice_ticks(min(ys), max(ys))


def _axes(x_ticks: list[float], y_ticks: list[float], sx, sy, x_label: str) -> list[str]:  # noqa: ANN001
    out = ['<g class="axes" stroke="#9a9a9a" font-size="11" fill="#333">',
           f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>']
    for t in x_ticks:
        x = sx(t)
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM + 5}"/>'
                   f'<text stroke="none" x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{escape(fmt(t))}</text>')
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line class="grid" stroke="#ececec" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
                   f'<line class="tick" x1="{LEFT - 5}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}"/>'
                   f'<text stroke="none" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>')
    out.append(f'<text stroke="none" x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
               f'{escape(x_label)}</text></g>')
    return out


def _series(s: Series, sx, sy) -> list[str]:  # noqa: ANN001
    """The path of one series (a new subpath after each non-finite gap) and its markers."""
    parts: list[str] = []
    pen_down = False
    drawn: list[tuple[float, float]] = []
    gaps: list[str] = []
    for x, y in s.points:
        if math.isfinite(x) and not math.isfinite(y):  # NaN or inf: a dashed line at that step, labelled
            gaps.append(f'<line class="non-finite" x1="{sx(x):.1f}" y1="{TOP}" x2="{sx(x):.1f}" y2="{HEIGHT - BOTTOM}" '
                        f'stroke="{s.color}" stroke-width="1.5" stroke-dasharray="3 3"/><text x="{sx(x) - 4:.1f}" '
                        f'y="{TOP + 12}" text-anchor="end" font-size="11" fill="{s.color}">{escape(str(y))}</text>')
        if not (math.isfinite(x) and math.isfinite(y)):
            pen_down = False
            continue
        px, py = sx(x), sy(y)
        parts.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
        drawn.append((px, py))
        pen_down = True
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    out = [f'<path class="series" data-series="{escape(s.name)}" d="{" ".join(parts)}" fill="none" '
           f'stroke="{s.color}" stroke-width="2.5" stroke-linejoin="round" stroke-linecap="round"{dash}/>', *gaps]
    if not s.line:
        out = [*gaps, f'<g class="markers" data-series="{escape(s.name)}" fill="{s.color}">'
               + "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4"/>' for px, py in drawn) + "</g>"]
        return out
    if len(drawn) <= MARKERS_UP_TO:
        out.append(f'<g class="markers" fill="{s.color}">'
                   + "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3"/>' for px, py in drawn) + "</g>")
    return out


def _legend(series: list[Series]) -> list[str]:
    out = ['<g class="legend" font-size="12" fill="#222">']
    x = LEFT
    for s in series:
        out.append(f'<line x1="{x}" y1="18" x2="{x + 22}" y2="18" stroke="{s.color}" stroke-width="3"'
                   + (' stroke-dasharray="6 4"' if s.dashed else "") + "/>"
                   f'<text x="{x + 28}" y="22">{escape(s.name)}</text>')
        x += 40 + 7 * len(s.name)
    out.append("</g>")
    return out


def line_chart(name: str, title: str, series: list[Series], *, x_label: str = "step") -> str:
    """One chart as an `<svg>` element string (WIDTH x HEIGHT px): `name` goes to `data-chart`, `title` to its
    accessible label and `<title>`; the y axis spans the finite values of all `series`."""
    x_ticks, y_ticks = _scales(series)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / ((y1 - y0) or 1) * (HEIGHT - TOP - BOTTOM)

    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(name)}" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'font-family="system-ui, sans-serif"><title>{escape(title)}</title>'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>')
    body = _axes(x_ticks, y_ticks, sx, sy, x_label) + [s for one in series for s in _series(one, sx, sy)]
    return head + "".join(body + _legend(series)) + "</svg>"
