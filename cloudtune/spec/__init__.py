"""The job spec (v1): pydantic models, YAML loading with line-aware errors, overrides, JSON Schema.

A pure data model at the bottom of cloudtune: it imports errors, units, the catalog and the per-cloud facts in
`cloudtune.contracts`, nothing that plans or runs a job. Modules:

- `base`: the strict model base, name rules, how errors quote values
- `resources`: the accelerator, machines and limits; per-provider settings
- `data`, `training`: the built-in recipe's `train` section
- `job`: the root `JobSpec`
- `sweep`: the `sweep` section: what a hyperparameter sweep varies, how, toward what; `trial_spec`
- `issues`: pydantic's errors as `SpecIssue`s named by field path and YAML line
- `origin`: where a spec came from (source, lines, `--set` items), for checks made after loading
- `paths`: local paths checked and made absolute
- `yamlload`: the line-aware, bounded YAML loader
- `load`: `load_spec`, `validate_spec`, `apply_overrides`, `json_schema`

Contract: `load_spec(path)` returns a validated, path-resolved `JobSpec` or raises `SpecError`, whose issues each
name the field path, the YAML line (when known) and how to fix it. Everything downstream trusts a `JobSpec`.
"""

from cloudtune.contracts.clouds import REMOTE_SCHEMES, SECRET_REF, is_remote
from cloudtune.spec.base import NAME_PATTERN, NAME_RULES, check_name, shown
from cloudtune.spec.data import DATA_FORMATS, DataSpec
from cloudtune.spec.audio import AudioSpec
from cloudtune.spec.image import ValidationSpec
from cloudtune.spec.issues import MAX_ISSUES
from cloudtune.spec.job import HUB_DATASET, MAX_INPUTS, CheckpointSpec, JobSpec
from cloudtune.spec.load import CodeJobSpec, apply_overrides, json_schema, load_spec, validate_spec
from cloudtune.spec.origin import SpecOrigin, field_path
from cloudtune.spec.paths import PATH_HINT, path_problem, resolve_paths
from cloudtune.spec.sweep import ParameterRange, SweepSpec, trial_spec
from cloudtune.spec.resources import (
    MAX_ACCELERATORS_PER_NODE, Accelerator, LocalSettings, ProvidersSpec, Resources, parse_accelerator,
)
from cloudtune.spec.training import PRECISIONS, TASKS, HealthSpec, Hyperparameters, LoraSpec, TrainSpec

__all__ = [
    "DATA_FORMATS", "HUB_DATASET", "MAX_ACCELERATORS_PER_NODE", "MAX_INPUTS", "MAX_ISSUES", "NAME_PATTERN", "NAME_RULES",
    "PATH_HINT", "PRECISIONS", "REMOTE_SCHEMES", "SECRET_REF", "TASKS",
    "Accelerator", "AudioSpec", "CheckpointSpec", "CodeJobSpec", "DataSpec", "HealthSpec", "Hyperparameters", "JobSpec",
    "LocalSettings", "LoraSpec", "ParameterRange", "ProvidersSpec", "Resources", "SpecOrigin", "SweepSpec", "TrainSpec", "ValidationSpec",
    "apply_overrides", "check_name", "field_path", "is_remote", "json_schema", "load_spec",
    "parse_accelerator", "path_problem", "resolve_paths", "shown", "trial_spec", "validate_spec",
]
