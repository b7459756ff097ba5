"""The training plots of cloudtune.train.plots (matplotlib, Agg), decoded with tests/test_report.py's pure-Python PNG
reader: each series drawn in its colour inside the axes, a lone evaluation visible, no file for an empty plot, a
one-line note and no file without matplotlib, and the causal-LM recipe writing model/plots/*.png."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cloudtune.train.plots import (DPI, EVAL_COLOUR, LOSS_COLOUR, LR_COLOUR, NO_MATPLOTLIB, SIZE_IN, line_chart,
                                   write_training_plots)
from tests.test_report import count_colour, read_png

pytest.importorskip("matplotlib")

W, H = int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI)
WHOLE = (0, 0, W, H)


def history(evals: list[tuple[int, float]]) -> list[dict[str, float]]:
    steps = [{"step": s, "loss": 3.0 / s, "learning_rate": 1e-4 * (1 - s / 50)} for s in range(1, 41)]
    steps += [{"step": 41, "loss": math.nan}, {"step": 42, "loss": math.inf}]
    return steps + [{"step": s, "eval_loss": v} for s, v in evals] + [{"step": 40, "train_loss": 1.0}]


def test_loss_and_learning_rate_charts(tmp_path: Path) -> None:
    written = write_training_plots(tmp_path, history([(10, 1.2), (20, 0.9), (40, 0.8)]))
    assert [p.name for p in written] == ["loss.png", "learning_rate.png"]
    loss = read_png((tmp_path / "plots" / "loss.png").read_bytes())
    assert loss[:2] == (W, H)
    assert count_colour(loss, WHOLE, LOSS_COLOUR, tol=10) > 300
    assert count_colour(loss, WHOLE, EVAL_COLOUR, tol=10) > 100
    assert count_colour(loss, WHOLE, LR_COLOUR, tol=10) == 0
    rate = read_png((tmp_path / "plots" / "learning_rate.png").read_bytes())
    assert count_colour(rate, WHOLE, LR_COLOUR, tol=10) > 300
    assert count_colour(rate, WHOLE, LOSS_COLOUR, tol=10) == 0


def test_a_lone_eval_point_is_drawn_and_an_empty_series_is_left_out(tmp_path: Path) -> None:
    """One evaluation at the end of training (the usual one-epoch job) is a visible marker; a series with no finite
    point is not drawn, nor listed in the legend."""
    path = tmp_path / "chart.png"
    train = [(float(s), 3.0 / s) for s in range(1, 41)]
    line_chart(path, "Loss", "loss", [("train loss", train, LOSS_COLOUR), ("eval loss", [(40.0, 0.2)], EVAL_COLOUR)])
    png = read_png(path.read_bytes())
    assert count_colour(png, WHOLE, EVAL_COLOUR, tol=10) >= 20  # the marker and the legend's entry
    assert write_training_plots(tmp_path / "m", [{"step": 3, "eval_loss": math.nan}, {"step": 3, "train_loss": 1.0}]) == []
    assert not (tmp_path / "m" / "plots").exists()


def test_without_matplotlib_one_note_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert write_training_plots(tmp_path, history([(10, 1.2)])) == []
    assert not (tmp_path / "plots").exists()
    assert capsys.readouterr().out.strip() == f"[cloudtune] {NO_MATPLOTLIB}"


@pytest.mark.slow
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
        assert png[:2] == (W, H)
        for colour in colours:
            assert count_colour(png, WHOLE, colour, tol=10) > 0, (name, colour)
