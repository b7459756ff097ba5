"""Compile a job spec with a `sweep:` into an Azure Machine Learning sweep job Plan: the job YAML that
`az ml job create --file` reads and `azure.ai.ml.load_job` loads (schema:
https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json).

Built around the job's own command job (`cloudtune_azure.request`): its command, code, environment, variables,
distribution and resources are the sweep's `trial`, so each trial is the same job; compute, identity, inputs, outputs
and tags move to the sweep. A trial's values reach cloudtune-run as `--<name>=${{search_space.<name>}}` arguments
appended to the trial command; the names are `cloudtune.kit.sweep.wire_name(path)` (search-space names take no dots:
`lora.r` is `lora__r`, and back). The objective is the MLflow metric the recipe's reporter logs
(`cloudtune.contracts.metrics`). Outputs name no path, so each trial writes to its own default location.

Search spaces in Azure ML's own terms (Azure ML docs, "Hyperparameter tuning a model (v2)"): `choice`, `uniform`,
`loguniform` whose bounds are NATURAL LOGS (the value is exp(uniform(min_value, max_value))), `quniform` with q=1 for
an int range (rounds a uniform draw to a whole number: each end has half the weight of the values between),
`qloguniform` for a log-scaled int range. Bayesian sampling takes only choice, uniform and quniform, and no early
termination policy; grid sampling takes only choice.

Pure and offline: no Azure SDK import, nothing written.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.kit import sweep as kit_sweep
from cloudtune.kit.states import AZUREML, map_native
from cloudtune.spec.sweep import ParameterRange, SweepSpec, values_from_arguments
from cloudtune.sweeptrials import Trial
from cloudtune_azure import request as command_job

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec
    from cloudtune_azure.settings import AzureSettings

SCHEMA = "https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json"
BAYESIAN_TYPES = ("choice", "uniform", "quniform")
GRID_MAX_VALUES = 1000
SWEEP_KIND = "sweep"  # JobRef.extra["kind"] of a sweep (cloudtune.sweep.KIND)
# the command job's keys that describe one trial (ParameterizedCommandSchema); the rest describe the sweep
TRIAL_KEYS = ("command", "code", "environment", "environment_variables", "distribution", "resources")


def compile_plan(spec: "JobSpec", settings: "AzureSettings", *, suffix: str, bundle: "Bundle | None", home: Path,
                 lock_dir: Path | None = None) -> "Plan":
    """A command job Plan, or for a spec with a `sweep:` a sweep job Plan whose trials are that command job."""
    sweep = getattr(spec, "sweep", None)
    if sweep is not None:
        check_sampling(sweep)  # refused before anything is compiled
    trial = command_job.compile_plan(spec, settings, suffix=suffix, bundle=bundle, home=home, lock_dir=lock_dir)
    if sweep is None:
        return trial
    notes = list(trial.notes)
    job = trial.request
    space = search_space(sweep)
    words = [f"--{name}=${{{{search_space.{name}}}}}" for name in space]
    trial_job = {key: job[key] for key in TRIAL_KEYS if key in job}
    trial_job["command"] = " ".join([job["command"], *(shlex.quote(w) for w in words)])
    request: dict[str, Any] = {
        "$schema": SCHEMA, "type": "sweep",
        **{key: job[key] for key in ("name", "display_name", "experiment_name", "compute", "identity") if key in job},
        "inputs": job["inputs"],
        "outputs": {name: {"type": out["type"], "mode": out["mode"]} for name, out in job["outputs"].items()},
        "sampling_algorithm": sweep.algorithm,
        "search_space": space,
        "objective": {"goal": sweep.objective.direction, "primary_metric": sweep.objective.metric},
        "limits": {"max_total_trials": sweep.max_trials, "max_concurrent_trials": sweep.parallel_trials,
                   "trial_timeout": job["limits"]["timeout"]},
        "trial": trial_job,
    }
    termination = early_termination(sweep, notes)
    if termination:
        request["early_termination"] = termination
    if "queue_settings" in job:
        request["queue_settings"] = job["queue_settings"]
    request["tags"] = job["tags"]
    _notes(sweep, space, notes)
    notes.append(kit_sweep.cost_note(trial, sweep, spec.resources.max_runtime_seconds))
    return replace(trial, request=request, notes=tuple(notes), model_uri=None)


def is_sweep(request: dict[str, Any]) -> bool:
    return request.get("type") == "sweep"


def trial_of(request: dict[str, Any]) -> dict[str, Any]:
    """The part of a job YAML that runs (command, code, environment): a sweep's `trial`, else the command job."""
    return request["trial"] if is_sweep(request) else request


def ref_extra(plan: "Plan") -> dict[str, Any]:
    """What a sweep's JobRef keeps (cloudtune.sweep reads `kind`; the sweep section reads values back typed)."""
    return {"kind": SWEEP_KIND, "sweep": (plan.spec or {}).get("sweep")}


def check_sampling(sweep: SweepSpec) -> None:
    """What Azure ML's sampling cannot take, refused with the nearest thing it can do: bayesian sampling takes choice,
    uniform and int ranges only (a log-scaled range has no bayesian form) and no early termination when asked for."""
    if sweep.algorithm == "bayesian":
        logs = sorted(path for path, rng in sweep.ranges().items() if rng.log_scale)
        if logs:
            raise UnsupportedSpec(
                f"sweep.parameters.{logs[0]}: Azure ML's bayesian sampling takes choice, uniform and quniform only, "
                "not a log-scaled range", fix="set sweep.algorithm: random (Azure ML samples loguniform there), or "
                "give the values as {choice: [...]}, e.g. [1e-5, 3e-5, 1e-4, 3e-4]")
        if sweep.early_stopping == "auto" and "early_stopping" in sweep.model_fields_set:
            raise UnsupportedSpec("sweep.early_stopping auto: Azure ML's bayesian sampling takes no early termination "
                                  "policy", fix="set sweep.early_stopping: off, or sweep.algorithm: random")


def search_space(sweep: SweepSpec) -> dict[str, dict[str, Any]]:
    """name -> Azure ML search-space entry, names in path order."""
    grid = sweep.algorithm == "grid"
    return {kit_sweep.wire_name(path): _entry(path, rng, grid) for path, rng in sorted(sweep.ranges().items())}


def _entry(path: str, rng: ParameterRange, grid: bool) -> dict[str, Any]:
    if grid:  # grid sampling takes choice only: an int range is the list of its whole numbers
        return {"type": "choice", "values": kit_sweep.grid_values(path, rng, GRID_MAX_VALUES, "Azure ML")}
    if rng.choice is not None:
        return {"type": "choice", "values": list(rng.choice)}
    low, high = rng.bounds  # type: ignore[misc]
    if rng.int is not None:
        if rng.log_scale:
            return {"type": "qloguniform", "min_value": math.log(low), "max_value": math.log(high), "q": 1}
        return {"type": "quniform", "min_value": int(low), "max_value": int(high), "q": 1}
    if rng.log_scale:  # Azure ML's loguniform takes natural-log bounds
        return {"type": "loguniform", "min_value": math.log(low), "max_value": math.log(high)}
    return {"type": "uniform", "min_value": float(low), "max_value": float(high)}


def early_termination(sweep: SweepSpec, notes: list[str]) -> dict[str, Any] | None:
    """`early_stopping: auto` as Azure ML's median stopping policy (the rule cloudtune uses everywhere): evaluated at
    every metric report; off for bayesian sampling, which takes no policy (see `check_sampling`)."""
    if sweep.early_stopping != "auto":
        return None
    if sweep.algorithm == "bayesian":
        notes.append("early_stopping auto (the default): Azure ML's bayesian sampling takes no early termination "
                     "policy, so this sweep runs every trial to its end; set sweep.algorithm: random to stop poor "
                     "trials early")
        return None
    return {"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 0}


def _notes(sweep: SweepSpec, space: dict[str, dict[str, Any]], notes: list[str]) -> None:
    notes.append(kit_sweep.summary_note(sweep))
    mapped = [f"{kit_sweep.wire_name(p)} = {p}" for p in sorted(sweep.ranges()) if kit_sweep.wire_name(p) != p]
    if mapped:
        notes.append("search-space names take no dots: " + ", ".join(mapped))
    if any(entry["type"] in ("loguniform", "qloguniform") for entry in space.values()):
        notes.append("loguniform bounds are natural logs in Azure ML (e.g. ln(1e-5) = -11.51)")
    if any(entry["type"] == "quniform" for entry in space.values()):
        notes.append("int ranges are quniform with q=1 (a rounded uniform draw: each end has half the weight)")
    if sweep.max_failed_trials:
        notes.append(f"max_failed_trials {sweep.max_failed_trials}: an Azure ML sweep job has no such limit; it runs "
                     "max_total_trials whatever fails")
    notes.append(f"the objective {sweep.objective.metric} is read from MLflow (the recipe logs each evaluation); each "
                 "trial's outputs go to its own default location; the best trial's model is the sweep's model")


CHILD_NUMBER = re.compile(r"_(\d+)$")  # a sweep job's trials are its child jobs <sweep>_0, <sweep>_1, ...
NOT_STARTED = "not in MLflow yet (the trial has not started): its values and objective come once it runs"
NEVER_LOGGED = "no MLflow run: the trial ended before it logged its values (`cloudtune logs` of the sweep shows why)"


def trials_of(children: list[Any], figures: dict[str, Any] | None = None,
              sweep: dict[str, Any] | None = None) -> list[Trial]:
    """The sweep job's child jobs (`MLClient.jobs.list(parent_job_name=...)`: name and status each) as Trials in
    trial order: number (the `_<n>` of the child's name; listing order for a name without one), state, job name, and
    from each child's MLflow run (`figures`: job name -> `cloudtune_azure.mlflowruns.RunFigures`, None when MLflow
    has no run yet) its values (the params named by the sweep's option paths, of each range's type) and objective
    (the latest value of the sweep's objective metric). `sweep`: the sweep section the ref carries."""
    spec = SweepSpec.model_validate(sweep) if sweep else None
    trials = []
    for position, child in enumerate(children):
        found = CHILD_NUMBER.search(str(child.name))
        native = str(getattr(child.status, "value", child.status))  # the SDK's JobStatus enum or a string
        run = (figures or {}).get(child.name)
        parameters, objective = ({}, None) if run is None or spec is None else _figures(run, spec)
        state = map_native(AZUREML, native)
        note = None if run is not None or figures is None else NEVER_LOGGED if state.terminal else NOT_STARTED
        trials.append(Trial(number=int(found.group(1)) if found else position, parameters=parameters,
                            state=state.value, objective=objective, job_id=child.name, note=note))
    return sorted(trials, key=lambda t: t.number)


def _figures(run: Any, sweep: SweepSpec) -> tuple[dict[str, Any], float | None]:
    """(values by option path, objective) of one trial's MLflow run."""
    ranges = sweep.ranges()
    values = values_from_arguments([f"--{k}={v}" for k, v in run.params.items() if k in ranges], sweep)
    objective = run.metrics.get(sweep.objective.metric)
    return values, objective if objective is None or math.isfinite(objective) else None
