"""A cloud sweep's trial inside the container: the values the tuning service chose, applied to the runtime job.

Each cloud's tuning service passes a trial's values under `cloudtune.spec.sweep.safe_name(path)` (`lora.r` ->
`lora__r`): SageMaker as hyperparameters (hyperparameters.json, text), Vertex AI as `--lora__r=16` arguments appended
to the container's (cloudtune-run's) arguments, Azure ML as the same arguments through `${{search_space.lora__r}}`.
The runtime job carries the sweep section (`cloudtune.contracts.jobfile.runtime_job`), so the values are read back to the
option paths with each range's own type (Vertex AI sends integers as doubles: `16.0` -> 16) and applied to the job
config with the spec's own rules (`cloudtune.spec.sweep.trial_train`, `command_arguments`, `command_env`).

Every process of a trial, on every node, reads the same hyperparameters or arguments (the service gives them to the
whole trial) and applies them before anything trains, so every rank trains with the same values. Standard library
and the spec's pydantic models only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from cloudtune.errors import JobInputError
from cloudtune.spec import TrainSpec
from cloudtune.spec.sweep import (
    SweepSpec, command_arguments, command_env, path_of_safe_name, trial_train, values_from_arguments,
)

ARGUMENT = re.compile(r"^--([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
# hyperparameters.json keys that are not a trial's values: the runtime job, script mode, the tuner's own
NOT_VALUES = re.compile(r"^(cloudtune_job|sagemaker_.*|_tuning_objective_metric)$")


def split_arguments(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """cloudtune-run's own arguments, and the trial's `--<name>=<value>` ones (name -> text). A name that is one of
    cloudtune-run's options (`--model-dir=...`) stays an option."""
    own: list[str] = []
    given: dict[str, str] = {}
    for arg in argv:
        found = ARGUMENT.match(arg)
        if found and "-" not in found.group(1) and found.group(1) not in ("input",):
            given[found.group(1)] = found.group(2)
        else:
            own.append(arg)
    return own, given


def from_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """SageMaker's hyperparameters.json without the job's own keys: the tuned values (text)."""
    return {k: str(v) for k, v in hyperparameters.items() if not NOT_VALUES.match(k)}


def apply(job: dict[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    """`job` with the trial values in `given` applied, and `job["trial"]` = {option path: value}; `job` as it is when
    it is no sweep's trial. Raises when a value does not fit its option (the service sent what the sweep's
    range does not allow) or names no parameter of the sweep: JobInputError (exit 65, never retried)."""
    sweep_data = job.get("sweep")
    if not sweep_data or not given:
        return job
    sweep = SweepSpec.model_validate(sweep_data)
    unknown = sorted(n for n in given if path_of_safe_name(n) not in sweep.ranges() and n not in sweep.ranges())
    if unknown:
        raise JobInputError(f"trial value {unknown[0]!r} names no parameter of the sweep "
                            f"({', '.join(sorted(sweep.ranges()))}). To fix: launch the sweep again with cloudtune")
    try:
        values = values_from_arguments([f"--{k}={v}" for k, v in given.items()], sweep)
        out = dict(job)
        if "train" in job:
            out["train"] = trial_train(TrainSpec.model_validate(job["train"]), values).model_dump(mode="json")
        else:
            words = " ".join(shlex.quote(a) for a in command_arguments(values))
            out["command"] = f"{job['command']} {words}".strip()
            out["env"] = {**(job.get("env") or {}), **command_env(values)}
    except (ValueError, ValidationError) as exc:
        raise JobInputError(f"trial values {dict(given)} do not fit the job: {exc}. To fix: check the sweep's "
                            "ranges against the options they set") from None
    out["trial"] = values
    return out
