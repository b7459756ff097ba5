"""transformers' load report for a new classification head (a `score.weight | MISSING` table) stays out of the job's
log; the recipe says it in one line (issue 12, kind 8). A report with other findings still reaches the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_a_new_head_is_one_line_not_a_table(tiny_gpt2: Path, capsys: pytest.CaptureFixture[str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    from cloudtune.train.models import load_pretrained

    with caplog.at_level(logging.WARNING):
        _, model = load_pretrained(str(tiny_gpt2), task="seq-classification", num_labels=3, shown="tiny")
    said = capsys.readouterr()
    everything = said.out + said.err + caplog.text
    assert "MISSING" not in everything and "LOAD REPORT" not in everything, everything
    assert "[cloudtune] model: score not in tiny: the classification head for 3 labels" in said.out
    assert model.ct_new_modules == ["score"]


def test_other_load_findings_still_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from cloudtune.train.models import NotLoadReport

    keep = NotLoadReport()
    record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1,
                               "X LOAD REPORT from: m\nKey | Status\nscore.weight | MISSING\nlm.bias | UNEXPECTED",
                               None, None)
    assert keep.filter(record)  # an unexpected weight is the user's to read
    record.msg = "X LOAD REPORT from: m\nKey | Status\nscore.weight | MISSING"
    assert not keep.filter(record)
    record.msg = "some other warning"
    assert keep.filter(record)
