"""Small parsers shared by the spec and the launchers."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_FACTOR = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> int:
    """`90m`, `2h`, `1d`, `3600s` or a number of seconds -> whole seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be like 90m, 2h, 1d or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        m = _DURATION.match(str(value).lower())
        if not m:
            raise ValueError(f"{value!r} is not a duration; write 90m, 2h, 1d or a number of seconds")
        seconds = int(float(m.group(1)) * _FACTOR[m.group(2)])
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds
