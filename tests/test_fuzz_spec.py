"""A seeded slice of benchmarks/fuzz_spec.py: hostile specs through `cloudtune validate` and the local dry run.

The full run (5,000+ cases) is `python benchmarks/fuzz_spec.py`; this slice keeps the same generator honest in CI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_spec.py"


@pytest.fixture(scope="module")
def fuzz_spec():
    spec = importlib.util.spec_from_file_location("fuzz_spec", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_spec"] = module
    spec.loader.exec_module(module)
    return module


def test_cases_are_reproducible(fuzz_spec) -> None:
    assert fuzz_spec.make_case(7, 3) == fuzz_spec.make_case(7, 3)
    assert fuzz_spec.make_case(7, 3) != fuzz_spec.make_case(7, 4)


def test_a_seeded_slice_gives_no_traceback_and_no_hang(fuzz_spec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    summary = fuzz_spec.fuzz(200, seed=2026, save=tmp_path / "failures")
    assert summary["cases"] == 200
    assert summary["tracebacks"] == 0, summary["failing_cases"]
    assert summary["internal_errors"] == 0, summary["failing_cases"]  # the user's input is never "report it"
    assert summary["validate_ok_dry_run_refused"] == 0, summary["failing_cases"]
    assert summary["slowest_s"] < 10, summary["failing_cases"]  # the 2 s target is measured by the full run
    assert summary["validate_exit_codes"].get("0", 0) >= 10  # the slice reaches valid specs too, not only errors

