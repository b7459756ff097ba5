"""Small parsers and number formats shared by the spec, the data checks and the launchers."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*([smhd]?)\s*", re.ASCII)
_FACTOR = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 365 * 86400
"""Longest duration the spec accepts (a year); each cloud's own, lower limit is checked by its launcher."""


def parse_duration(value: str | int | float) -> int:
    """`90m`, `2h`, `1d`, `3600s` or a number of seconds -> whole seconds, 1 .. MAX_DURATION_S.

    Raises ValueError (never OverflowError) for anything else: a bool, NaN, an infinity, an out-of-range number."""
    usage = "write 90m, 2h, 1d or a number of seconds"
    if isinstance(value, bool):
        raise ValueError(f"a duration must be like 90m, 2h or 1d; {usage}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"duration {value!r} is not a finite number; {usage}")
        if abs(value) > MAX_DURATION_S:
            raise ValueError(f"duration {_short(value)} seconds is over {MAX_DURATION_S // 86400} days; {usage}")
        seconds = int(value)
    else:
        m = _DURATION.fullmatch(str(value).lower())
        if not m:
            raise ValueError(f"{_short(value)} is not a duration; {usage}")
        amount = float(m.group(1)) * _FACTOR[m.group(2)]
        if amount > MAX_DURATION_S:
            raise ValueError(f"duration {_short(value)} is over {MAX_DURATION_S // 86400} days; {usage}")
        seconds = int(amount)
    if seconds <= 0:
        raise ValueError(f"duration {_short(value)} must be at least one second")
    return seconds


def _short(value: object, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters (a 400-digit number stays readable in an error)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def beside(value: float, limit: float, decimals: int = 1, most: int = 9) -> tuple[str, str]:
    """(value, limit) as a message prints a measured value beside the limit it breaks (or keeps).

    Contract: the two texts, read back as numbers, compare as `value` and `limit` do (under, equal or over), so a
    clip of 0.9986 s is never shown as "1.00 s long, under the minimum (1 s)". The limit is shown as `{limit:g}`
    when that is exactly it (1, 0.5), else with the value's decimals; the value with `decimals` decimals, or as
    many more (up to `most`) as it takes (0.999). Two numbers closer than that are shown in full (`repr`)."""
    side = _sign(value - limit)
    short = f"{limit:g}"
    for places in range(decimals, max(decimals, most) + 1):
        shown_value = f"{value:.{places}f}"
        shown_limit = short if float(short) == limit else f"{limit:.{places}f}"
        if _sign(float(shown_value) - float(shown_limit)) == side:
            return shown_value, shown_limit
    return repr(float(value)), repr(float(limit))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)
