"""Azure ML sweeps: golden sweep job YAMLs, each loaded by `azure.ai.ml.load_job` (its marshmallow schema) as a
SweepJob, Azure's search-space conventions, and the refusals.

Regenerate after an intended change: CLOUDTUNE_UPDATE_GOLDEN=1 python -m pytest tests/azure/test_sweep_plan.py
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtune.errors import UnsupportedSpec
from tests.azure.planning import DS_IN, SUFFIX, settings, write_data
from tests.golden import assert_golden
from tests.sweep_scenarios import GOLDEN, assert_portable, normalise, sweeps

from cloudtune.spec import validate_spec
from cloudtune_azure.launcher import AzureLauncher

ACCEL = {"single": "A100-80GB:1", "multi_node": "A100-80GB:8", "image": "myregistry.azurecr.io/train/cloudtune-gpu:0.1.0"}
NAMES = sorted(sweeps(Path("/x"), DS_IN, ACCEL))
# Azure ML's bayesian sampling takes no log-scaled range: these scenarios are sampled at random there
AZURE_CHANGES: dict[str, dict[str, Any]] = {"lora-bayesian": {"algorithm": "random"}}


def data_for(name: str, base: Path, **changes: Any) -> dict[str, Any]:
    data = sweeps(base, DS_IN, ACCEL)[name]
    return {**data, "sweep": {**data["sweep"], **AZURE_CHANGES.get(name, {}), **changes}}


def build(name: str, tmp_path: Path, compute: str | None = "gpu-cluster", **changes: Any):
    write_data(tmp_path)
    spec = validate_spec(data_for(name, tmp_path, **changes), base_dir=tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        bundle = build_bundle(Path(spec.code))
    extra = {"compute": compute} if compute else {}
    return AzureLauncher(home=tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX, bundle=bundle)


def load(request: dict[str, Any]):
    from azure.ai.ml import load_job

    return load_job(source=io.StringIO(yaml.safe_dump(request, sort_keys=False)))


@pytest.mark.parametrize("name", NAMES)
def test_golden_sweep_yaml(name: str, tmp_path: Path) -> None:
    plan = build(name, tmp_path, compute=None if name == "multi-node-2x8-random" else "gpu-cluster")
    assert plan.request_format == "yaml"
    assert_portable(plan, tmp_path)
    assert_golden(GOLDEN / "azure" / f"sweep-{name}.yaml", normalise(plan, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_sweep_yaml_loads_as_the_sdk_sweep_job(name: str, tmp_path: Path) -> None:
    from azure.ai.ml.sweep import SweepJob

    plan = build(name, tmp_path, compute=None if name == "multi-node-2x8-random" else "gpu-cluster")
    job = load(plan.request)
    assert isinstance(job, SweepJob)
    sweep = validate_spec(data_for(name, tmp_path), base_dir=tmp_path).sweep
    assert job.limits.max_total_trials == sweep.max_trials
    assert job.limits.max_concurrent_trials == sweep.parallel_trials
    assert job.objective.primary_metric == sweep.objective.metric and job.objective.goal == sweep.objective.direction
    assert set(job.search_space) == {p.replace(".", "__") for p in sweep.ranges()}
    for name_ in job.search_space:  # each search-space value reaches cloudtune-run
        assert f"--{name_}=${{{{search_space.{name_}}}}}" in job.trial.command
    for kind, ref in re.findall(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}", job.trial.command):
        assert ref in (job.inputs if kind == "inputs" else job.outputs), ref
    for out in job.outputs.values():  # no shared path: each trial writes to its own default location
        assert out.path is None
    job._to_rest_object()  # the SDK's own conversion to the REST body (search-space names checked there)


def test_search_space_in_azure_conventions(tmp_path: Path) -> None:
    space = build("lora-bayesian", tmp_path).request["search_space"]
    assert space["hyperparameters__learning_rate"] == {"type": "loguniform", "min_value": math.log(5e-5),
                                                       "max_value": math.log(5e-3)}  # natural-log bounds
    assert space["hyperparameters__batch_size"] == {"type": "quniform", "min_value": 4, "max_value": 16, "q": 1}
    assert space["lora__r"] == {"type": "choice", "values": [8, 16, 32]}
    grid = build("grid", tmp_path).request["search_space"]
    assert grid["hyperparameters__batch_size"] == {"type": "choice", "values": [4, 5]}


def test_multi_node_trial_keeps_the_distribution(tmp_path: Path) -> None:
    plan = build("multi-node-2x8-random", tmp_path, compute=None)
    trial = plan.request["trial"]
    assert trial["distribution"] == {"type": "pytorch", "process_count_per_instance": 1}
    assert trial["resources"]["instance_count"] == 2 and "compute" not in plan.request


def test_bayesian_default_early_stopping_is_turned_off_with_a_note(tmp_path: Path) -> None:
    plan = build("multi-node-2x8-random", tmp_path, algorithm="bayesian",
                 parameters={"learning_rate": {"uniform": [1e-6, 1e-4]}, "weight_decay": {"uniform": [0.0, 0.1]}})
    assert plan.request["sampling_algorithm"] == "bayesian" and "early_termination" not in plan.request
    plan = build("lora-bayesian", tmp_path, algorithm="bayesian", parameters={"lora.r": {"choice": [8, 16]}})
    assert "early_termination" not in plan.request
    assert any("bayesian sampling takes no early termination" in n for n in plan.notes)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"algorithm": "bayesian"}, "not a log-scaled range"),
    ({"algorithm": "bayesian", "parameters": {"lora.r": {"choice": [8, 16]}}, "early_stopping": "auto"},
     "takes no early termination"),
])
def test_refusals(changes: dict[str, Any], needle: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSpec) as err:
        build("lora-bayesian", tmp_path, **changes)
    assert needle in str(err.value) and "sweep.algorithm: random" in err.value.fix
