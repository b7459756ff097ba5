"""Preemption drill on the local launcher: three kills (SIGTERM twice, SIGKILL once) of the node's `cloudtune-run`
at seeded random steps; `retries: 3` brings the job back each time; the result must be bit-identical to an
uninterrupted run of the same seed, with the same number of optimizer steps. The drill itself lives in
`benchmarks/preemption_drill.py` (which prints the same report as JSON)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _drill_module():
    spec = importlib.util.spec_from_file_location("preemption_drill", ROOT / "benchmarks/preemption_drill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kill_plan_is_seeded() -> None:
    drill = _drill_module()
    plan = drill.plan_kills(0, 90)
    assert plan == drill.plan_kills(0, 90)
    assert sorted(name for _, name in plan) == ["SIGKILL", "SIGTERM", "SIGTERM"]
    steps = [s for s, _ in plan]
    assert steps == sorted(steps) and all(b - a >= 10 for a, b in zip(steps, steps[1:])) and steps[-1] < 75


def test_three_kills_then_identical_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drill = _drill_module()
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))  # run_drill sets it too; this restores it after
    report = drill.run_drill(tmp_path, seed=0, max_steps=90, every_steps=3)
    print("preemption drill:", {k: report[k] for k in ("kill_plan", "resumed_from_steps", "drilled_global_step",
                                                      "reference_global_step", "max_abs_diff")})
    log = Path(report["job_log"]).read_text()

    assert [e["signal"] for e in report["kills"]] == [n for _, n in drill.plan_kills(0, 90)]
    assert report["attempts"] == 4 and "restarting (retry 3 of 3)" in log
    # each SIGTERM checkpointed the step it stopped at, and said so in the documented words
    sigterm_steps = [int(s) for s in re.findall(
        r"^\[cloudtune\] SIGTERM received: checkpoint saved at step (\d+), exiting$", log, re.M)]
    assert sigterm_steps == [e["sigterm_checkpoint_step"] for e in report["kills"] if e["signal"] == "SIGTERM"]
    for e in report["kills"]:
        assert e["newest_checkpoint_when_signalled"] >= e["target_step"]
        if e["signal"] == "SIGTERM":
            assert e["resume_from_step"] == e["sigterm_checkpoint_step"] >= e["newest_checkpoint_when_signalled"]
    # every restart resumed from the newest complete checkpoint, moving forward
    assert report["resumed_from_steps"] == [e["resume_from_step"] for e in report["kills"]]
    assert report["resumed_from_steps"] == sorted(report["resumed_from_steps"])
    # same optimizer step count, same weights (CPU, same seed: data order and RNG state are restored exactly)
    assert report["drilled_global_step"] == report["reference_global_step"] == 90
    assert report["max_abs_diff"] == 0.0
