"""A sweep's trials as every provider reports them: the one view `status`, `list`, `report`, `download` and the API
read, whoever ran the sweep (Optuna on this machine, SageMaker, Vertex AI, Azure ML).

A launcher that runs sweeps gives `sweep_trials(ref) -> list[Trial]` (the `SweepLauncher` protocol); the local sweep
builds the same list from its trials' job records. `ranked` orders them best first. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

TRIAL_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "pruned")
"""A trial's state: a job's states, plus `pruned` (stopped early by the sweep's early-stopping rule)."""


@dataclass
class Trial:
    """One trial. `parameters`: option path -> value (the sweep's names, `hyperparameters.learning_rate`);
    `objective`: the final value of the sweep's metric (None until reported); `intermediate`: [[step, value], ...]
    as reported during training; `cost_usd`: what it cost so far (None when unknown); `job_id`: the trial's own job
    (a record in the job store, or the service's training-job name)."""

    number: int
    parameters: dict[str, Any]
    state: str
    objective: float | None = None
    job_id: str | None = None
    intermediate: list[list[float]] = field(default_factory=list)
    cost_usd: float | None = None
    model_uri: str | None = None
    duration_s: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class SweepLauncher(Protocol):
    """What a launcher gives for the sweeps it runs (`ref` is the sweep's JobRef)."""

    def sweep_trials(self, ref: Any) -> list[Trial]: ...


def _finite(value: float | None) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def ranked(trials: Iterable[Trial], direction: str) -> list[Trial]:
    """Best first: trials with an objective (succeeded ones before pruned ones, each by objective in `direction`:
    minimize or maximize), then the rest by number."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: Trial) -> tuple[Any, ...]:
        if _finite(t.objective):
            return (0 if t.state == "succeeded" else 1, sign * float(t.objective), t.number)  # type: ignore[arg-type]
        return (2, 0.0, t.number)

    return sorted(trials, key=key)


def best(trials: Iterable[Trial], direction: str) -> Trial | None:
    """The best succeeded trial with an objective, or None."""
    top = [t for t in ranked(trials, direction) if t.state == "succeeded" and _finite(t.objective)]
    return top[0] if top else None


def counts(trials: Iterable[Trial]) -> dict[str, int]:
    """How many trials are in each state (states with none left out)."""
    out: dict[str, int] = {}
    for t in trials:
        out[t.state] = out.get(t.state, 0) + 1
    return out
