"""`cloudtune.units.beside`: a measured value printed beside the limit it breaks never reads as the limit, or as on
the other side of it (0.9986 s under a 1 s minimum once read "1.00 s")."""

from __future__ import annotations

import random

import pytest

from cloudtune.units import beside


@pytest.mark.parametrize("value, limit, decimals, shown", [
    (0.9986, 1, 2, ("0.999", "1")),  # the new-user case: not "1.00"
    (0.5, 1, 2, ("0.50", "1")),  # far from the limit: as before
    (1.0004, 1, 2, ("1.0004", "1")),  # over, not "1.00"
    (28.84, 24 * 1.2, 1, ("28.84", "28.80")),  # a computed limit (28.799999999999997) with the value's decimals
    (40.3, 24 * 1.2, 1, ("40.3", "28.8")),
    (1, 1, 2, ("1.00", "1")),  # equal stays equal
    (1 + 1e-12, 1, 2, ("1.000000000001", "1.0")),  # closer than `most` decimals: in full
])
def test_beside(value: float, limit: float, decimals: int, shown: tuple[str, str]) -> None:
    assert beside(value, limit, decimals) == shown


def test_the_texts_always_compare_as_the_numbers_do() -> None:
    rng = random.Random(7)
    for _ in range(20000):
        limit = rng.choice([1, 0.5, 2.5, 24 * 1.2, 80 * 1.2, rng.uniform(0, 100)])
        value = limit + rng.choice([-1, 1]) * 10 ** rng.uniform(-13, 1)
        text, limit_text = beside(value, limit, rng.choice([0, 1, 2]))
        assert (float(text) > float(limit_text)) == (value > limit), (value, limit, text, limit_text)
        assert (float(text) < float(limit_text)) == (value < limit), (value, limit, text, limit_text)
