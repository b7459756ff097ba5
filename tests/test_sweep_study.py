"""The local sweep's Optuna study: a resumed sweep draws on from where it stopped, so it never repeats the trials it
already ran (the sampler is seeded with the job's seed plus the trials the journal holds)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("optuna")

from cloudtune.local.sweep import make_study, suggest  # noqa: E402
from cloudtune.spec import JobSpec  # noqa: E402


def _spec(algorithm: str) -> JobSpec:
    return JobSpec.model_validate({
        "name": "s", "inputs": {"train": "data", "eval": "data"},
        "train": {"model": "gpt2", "lora": {}, "hyperparameters": {"seed": 7}},
        "sweep": {"algorithm": algorithm, "max_trials": 6, "early_stopping": "off",
                  "parameters": {"learning_rate": {"loguniform": [1e-5, 1e-2]}, "lora.r": {"choice": [4, 8, 16, 32]}}},
    })


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_a_resumed_study_does_not_draw_the_same_trials_again(tmp_path: Path, algorithm: str) -> None:
    spec = _spec(algorithm)
    ranges = spec.sweep.ranges()
    first = make_study(tmp_path, spec, "s")
    drawn = []
    for _ in range(2):
        trial = first.ask()
        drawn.append(suggest(trial, ranges))
        first.tell(trial, 1.0)
    resumed = make_study(tmp_path, spec, "s")  # the driver died; a new one loads the journal
    again = suggest(resumed.ask(), ranges)
    assert again not in drawn
    (tmp_path / "fresh").mkdir()
    fresh = make_study(tmp_path / "fresh", spec, "s")  # a new sweep with the same seed: the same first draw
    assert suggest(fresh.ask(), ranges) == drawn[0]
