"""The stdlib PNG line chart of cloudtune.report.png (decoded with tests/test_report.py's pure-Python reader) and
the causal-LM recipe writing model/plots/loss.png and learning_rate.png."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest

from cloudtune.report.png import (EVAL_COLOUR, LOSS_COLOUR, LR_COLOUR, MARGIN_BOTTOM, MARGIN_LEFT, MARGIN_RIGHT,
                                  MARGIN_TOP, TITLE_Y, line_chart_png, write_training_plots)
from tests.test_report import count_colour, read_png

W, H = 640, 360


def hex_of(rgb: tuple[int, int, int]) -> str:
    return "".join(f"{c:02x}" for c in rgb)


def chart() -> bytes:
    train = [(float(s), 3.0 / s) for s in range(1, 41)] + [(41.0, math.nan), (42.0, math.inf)]
    evals = [(10.0, 1.2), (20.0, 0.9), (float("nan"), 0.5), (40.0, 0.8)]
    return line_chart_png("Loss 1e-05", [("train loss", train, LOSS_COLOUR), ("eval loss", evals, EVAL_COLOUR)],
                          width=W, height=H)


def test_png_structure_and_crcs() -> None:
    data = chart()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_series_inside_frame_text_in_title_area() -> None:
    png = read_png(chart())
    assert png[:3] == (W, H, 3)
    frame = (MARGIN_LEFT + 1, MARGIN_TOP + 1, W - MARGIN_LEFT - MARGIN_RIGHT - 1, H - MARGIN_TOP - MARGIN_BOTTOM - 1)
    for colour in (LOSS_COLOUR, EVAL_COLOUR):
        assert count_colour(png, frame, hex_of(colour), tol=10) > 100, colour
        for outside in ((0, MARGIN_TOP, MARGIN_LEFT, H - MARGIN_TOP),  # left margin
                        (0, H - MARGIN_BOTTOM + 1, W, MARGIN_BOTTOM),  # below the frame
                        (W - MARGIN_RIGHT + 1, MARGIN_TOP, MARGIN_RIGHT, H - MARGIN_TOP)):  # right margin
            assert count_colour(png, outside, hex_of(colour), tol=10) == 0, (colour, outside)
        assert count_colour(png, (0, TITLE_Y + 20, W, MARGIN_TOP - TITLE_Y - 21), hex_of(colour), tol=10) > 0  # legend
    assert count_colour(png, (0, TITLE_Y, W, 16), "1e1e1e", tol=10) > 50  # the title's glyphs
    assert count_colour(png, (0, MARGIN_TOP, MARGIN_LEFT - 2, H - MARGIN_TOP - MARGIN_BOTTOM), "1e1e1e", tol=10) > 10


def test_no_points_gives_an_empty_frame_and_no_file(tmp_path: Path) -> None:
    png = read_png(line_chart_png("Empty", [("nothing", [(math.nan, 1.0)], LR_COLOUR)], width=200, height=120))
    assert png[:2] == (200, 120)
    assert count_colour(png, (MARGIN_LEFT + 1, MARGIN_TOP + 1, 90, 30), hex_of(LR_COLOUR), tol=10) == 0
    assert write_training_plots(tmp_path, [{"train_loss": 1.0, "step": 3}]) == []
    assert not (tmp_path / "plots").exists()


def test_recipe_writes_plots(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from cloudtune.spec import CheckpointSpec
    from cloudtune.train.causal_lm import run_causal_lm
    from tests.tiny_models import make_tiny_gpt2
    from tests.train.test_recipe_causal_lm import job_dirs, make_ctx, make_spec

    model = make_tiny_gpt2(tmp_path / "tiny" / "tiny-gpt2")
    ctx = make_ctx(tmp_path, job_dirs(tmp_path))
    run_causal_lm(ctx, make_spec(model, max_steps=6, eval_every=2), CheckpointSpec(every_steps=50))
    for name, colours in (("loss.png", (LOSS_COLOUR, EVAL_COLOUR)), ("learning_rate.png", (LR_COLOUR,))):
        png = read_png((ctx.model_dir / "plots" / name).read_bytes())
        assert png[:3] == (800, 450, 3)
        for colour in colours:
            assert count_colour(png, (MARGIN_LEFT + 1, MARGIN_TOP + 1, 800 - MARGIN_LEFT - MARGIN_RIGHT - 1,
                                      450 - MARGIN_TOP - MARGIN_BOTTOM - 1), hex_of(colour), tol=10) > 0, (name, colour)


def test_a_lone_eval_point_is_drawn_and_an_empty_series_has_no_legend() -> None:
    """One evaluation at the end of training (the usual `eval_strategy: epoch` on a 1-epoch job) is a visible square,
    not a legend entry with no line; a series with no finite point gets no legend entry."""
    train = [(float(s), 3.0 / s) for s in range(1, 41)]
    png = read_png(line_chart_png("Loss", [("train loss", train, LOSS_COLOUR), ("eval loss", [(40.0, 0.2)], EVAL_COLOUR),
                                           ("nothing", [(math.nan, 1.0)], LR_COLOUR)], width=W, height=H))
    frame = (MARGIN_LEFT + 1, MARGIN_TOP + 1, W - MARGIN_LEFT - MARGIN_RIGHT - 1, H - MARGIN_TOP - MARGIN_BOTTOM - 1)
    assert count_colour(png, frame, hex_of(EVAL_COLOUR), tol=10) >= 20  # a 7x7 marker, clipped at the frame's edge
    legend = (0, TITLE_Y + 20, W, MARGIN_TOP - TITLE_Y - 21)
    assert count_colour(png, legend, hex_of(EVAL_COLOUR), tol=10) > 0
    assert count_colour(png, legend, hex_of(LR_COLOUR), tol=10) == 0
