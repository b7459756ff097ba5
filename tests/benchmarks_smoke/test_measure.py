"""Smoke tests of the benchmark harness (no torch): the subprocess meter and the old loader's lookup in git."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from measure import run_child  # noqa: E402


def test_run_child_reports_the_result_and_peak_rss(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = ("import json, sys; sys.path.insert(0, %r); from measure import child_rusage; "
            "x = bytearray(120 * 1024 * 1024); json.dump({'ok': 1} | child_rusage(), open(%r, 'w'))") % (str(BENCH), str(out))
    res = run_child([sys.executable, "-c", code], out)
    assert res["returncode"] == 0 and res["ok"] == 1 and res["killed"] is None
    assert res["self_maxrss_mb"] >= 120 and res["peak_rss_mb"] >= 120


def test_run_child_stops_a_child_past_its_memory_bound(tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    code = "import time; x = [bytearray(50 * 1024 * 1024) for _ in range(8)]; time.sleep(30)"
    res = run_child([sys.executable, "-c", code], tmp_path / "r.json", rss_limit_mb=150, time_limit_s=20)
    assert res["killed"] == "rss" and res["wall_s"] < 20


def test_run_child_stops_a_child_past_its_time_bound(tmp_path: Path) -> None:
    res = run_child([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "r.json", time_limit_s=1)
    assert res["killed"] == "time" and res["wall_s"] < 10


def test_old_loader_is_found_in_git(tmp_path: Path) -> None:
    from preprocess import old_loader_source

    try:
        found = old_loader_source(tmp_path / "old.py")
    except SystemExit as exc:  # a shallow clone or an exported tree has no history
        pytest.skip(str(exc))
    text = (tmp_path / "old.py").read_text()
    assert "def read_records" in text and "def encode_records" in text and len(found["commit"]) == 40
