"""Training plots as PNG files, drawn and encoded with the standard library only (zlib, struct).

`line_chart_png` draws a line chart (frame, grid, 2-px polylines, a 5x7 bitmap font for the title, the axis range
and a legend); `write_training_plots` writes `plots/loss.png` and `plots/learning_rate.png` into a model dir from a
Trainer's `state.log_history`.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any

RGB = tuple[int, int, int]
Series = tuple[str, list[tuple[float, float]], RGB]

WHITE, GRID, FRAME, INK = (255, 255, 255), (228, 228, 228), (70, 70, 70), (30, 30, 30)
LOSS_COLOUR, EVAL_COLOUR, LR_COLOUR = (31, 119, 180), (214, 39, 40), (44, 160, 44)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 24, 48, 40
TITLE_Y, LEGEND_Y = 6, 30

# 5x7 glyphs: 7 rows of 5 bits (bit 4 = the leftmost column), two hex digits a row; lower case prints as upper case
_GLYPH_HEX = (
    "0:0e11131519110e 1:040c040404040e 2:0e11010204081f 3:1f02040201110e 4:02060a121f0202 5:1f101e0101110e "
    "6:0608101e11110e 7:1f010204080808 8:0e11110e11110e 9:0e11110f01020c .:00000000000c0c -:0000001f000000 "
    "+:0004041f040400 _:0000000000001f ,:0000000000040c (:02040808080402 ):08040202020408 /:01010204081010 "
    "A:0e11111f111111 B:1e11111e11111e C:0e11101010110e D:1c12111111121c E:1f10101e10101f F:1f10101e101010 "
    "G:0e10101711110f H:1111111f111111 I:0e04040404040e J:0702020202120c K:11121418141211 L:1010101010101f "
    "M:111b1515111111 N:11111915131111 O:0e11111111110e P:1e11111e101010 Q:0e11111115120d R:1e11111e141211 "
    "S:0f10100e01011e T:1f040404040404 U:1111111111110e V:11111111110a04 W:1111111515150a X:11110a040a1111 "
    "Y:1111110a040404 Z:1f01020408101f")
GLYPHS: dict[str, list[int]] = {
    item[0]: [int(item[2 + i:4 + i], 16) for i in range(0, 14, 2)] for item in _GLYPH_HEX.split()}


class Canvas:
    """An RGB raster (row-major bytearray) with clipped pixel, line, rectangle and text drawing."""

    def __init__(self, width: int, height: int, background: RGB = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def put(self, x: int, y: int, colour: RGB, clip: tuple[int, int, int, int] | None = None) -> None:
        """Set one pixel; outside the canvas (or the clip box x0, y0, x1, y1 inclusive) does nothing."""
        x0, y0, x1, y1 = clip if clip is not None else (0, 0, self.width - 1, self.height - 1)
        if x0 <= x <= x1 and y0 <= y <= y1 and 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i:i + 3] = bytes(colour)

    def line(self, a: tuple[int, int], b: tuple[int, int], colour: RGB, thick: int = 1,
             clip: tuple[int, int, int, int] | None = None) -> None:
        """Bresenham line from a to b; `thick` draws a thick x thick square at each point."""
        (x, y), (x1, y1) = a, b
        dx, dy = abs(x1 - x), -abs(y1 - y)
        sx, sy = (1 if x < x1 else -1), (1 if y < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(thick):
                for oy in range(thick):
                    self.put(x + ox, y + oy, colour, clip)
            if x == x1 and y == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err, x = err + dy, x + sx
            if e2 <= dx:
                err, y = err + dx, y + sy

    def text(self, x: int, y: int, s: str, colour: RGB, scale: int = 1) -> int:
        """Print s with the 5x7 font, top-left at (x, y); returns the x after the last glyph. Unknown
        characters print as blanks."""
        for ch in s:
            rows = GLYPHS.get(ch.upper(), [0] * 7)
            for r, bits in enumerate(rows):
                for c in range(5):
                    if bits & (0x10 >> c):
                        for ox in range(scale):
                            for oy in range(scale):
                                self.put(x + c * scale + ox, y + r * scale + oy, colour)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        """The canvas as an 8-bit RGB, non-interlaced PNG (filter 0 on every row)."""
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride]) for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + \
            _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC-32 of type and body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _label(v: float) -> str:
    """A short axis label: up to 4 significant digits."""
    return f"{v:.4g}"


def _ranges(series: list[Series]) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) over every finite point, widened when flat; (0, 1, 0, 1) with no points."""
    pts = [(x, y) for _, points, _ in series for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return 0.0, 1.0, 0.0, 1.0
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    return x0, x1, y0, y1


MARKED_POINTS = 60
"""A series with at most this many points also gets a square marker at each (a lone point would be a dot)."""
MARKER = 3
"""Half the side of a point's marker, in pixels (a 7x7 square)."""


def line_chart_png(title: str, series: list[Series], width: int = 800, height: int = 450) -> bytes:
    """A line chart as PNG bytes: white background, framed plot with a light grid, each series (name, [(x, y)],
    RGB) as a 2-px polyline in its colour (non-finite points skipped; a series of at most MARKED_POINTS points also
    marked with a square at each), the title, the y range, the first and last x, and a legend of the series drawn
    (names in their colours) above the plot."""
    canvas = Canvas(width, height)
    left, top, right, bottom = MARGIN_LEFT, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM
    for i in range(1, 5):  # light grid, then the frame over it
        gx, gy = left + (right - left) * i // 5, top + (bottom - top) * i // 5
        canvas.line((gx, top), (gx, bottom), GRID)
        canvas.line((left, gy), (right, gy), GRID)
    for a, b in (((left, top), (right, top)), ((right, top), (right, bottom)), ((right, bottom), (left, bottom)),
                 ((left, bottom), (left, top))):
        canvas.line(a, b, FRAME)
    x0, x1, y0, y1 = _ranges(series)

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (round(left + 2 + (x - x0) / (x1 - x0) * (right - left - 5)),
                round(bottom - 3 - (y - y0) / (y1 - y0) * (bottom - top - 5)))

    inside = (left + 1, top + 1, right - 1, bottom - 1)
    drawn = []
    for name, points, colour in series:
        pts = [to_px(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if not pts:  # nothing to show: no legend entry either
            continue
        drawn.append((name, points, colour))
        for a, b in zip(pts, pts[1:] or pts):
            canvas.line(a, b, colour, thick=2, clip=inside)
        if len(pts) <= MARKED_POINTS:  # sparse series (evaluations, one eval at the end): a square at each point
            for px, py in pts:
                for oy in range(-MARKER, MARKER + 1):
                    canvas.line((px - MARKER, py + oy), (px + MARKER, py + oy), colour, clip=inside)
    canvas.text(10, TITLE_Y, title, INK, scale=2)
    for value, y in ((y1, top), (y0, bottom - 7)):
        label = _label(value)
        canvas.text(left - 6 - 6 * len(label), y, label, INK)
    canvas.text(left, bottom + 8, _label(x0), INK)
    last = _label(x1)
    canvas.text(right - 6 * len(last), bottom + 8, last, INK)
    canvas.text((left + right) // 2 - 12, bottom + 8, "STEP", INK)
    x = left
    for name, _, colour in drawn:
        canvas.line((x, LEGEND_Y + 3), (x + 14, LEGEND_Y + 3), colour, thick=2)
        x = canvas.text(x + 20, LEGEND_Y, name, colour) + 18
    return canvas.png()


def _points(log_history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of every log entry that has a numeric `key` and a `step`."""
    out = []
    for entry in log_history:
        value, step = entry.get(key), entry.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)):
            out.append((float(step), float(value)))
    return out


def write_training_plots(model_dir: Path, log_history: list[dict[str, Any]]) -> list[Path]:
    """Write plots/loss.png (train `loss` and `eval_loss` by step) and plots/learning_rate.png into model_dir
    from a Trainer's `state.log_history`; a plot with no points is not written. Returns the paths written."""
    plots = Path(model_dir) / "plots"
    charts = [("loss.png", "Loss", [("train loss", _points(log_history, "loss"), LOSS_COLOUR),
                                    ("eval loss", _points(log_history, "eval_loss"), EVAL_COLOUR)]),
              ("learning_rate.png", "Learning rate",
               [("learning rate", _points(log_history, "learning_rate"), LR_COLOUR)])]
    written = []
    for name, title, series in charts:
        series = [s for s in series if s[1]]
        if not series:
            continue
        plots.mkdir(parents=True, exist_ok=True)
        path = plots / name
        path.write_bytes(line_chart_png(title, series))
        written.append(path)
    return written
