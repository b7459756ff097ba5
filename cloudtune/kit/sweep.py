"""What the three cloud sweep compilers share: the trial's parameter names on the wire, the service-side name of a
sweep, its cost bound, and the plan notes every cloud adds.

A cloud sweep is built around the job's own compiled request: each trial is an ordinary job of the same compiler
(same image, start path, checkpoints, health checks, triage). The tuning service chooses each trial's values and
passes them to the container under `safe_name(path)` (`hyperparameters.learning_rate` ->
`hyperparameters__learning_rate`): as hyperparameters on SageMaker, as `--name=value` arguments on Vertex AI and
Azure ML. `cloudtune-run` maps them back to the option paths and applies them to the job config before any rank
starts (`cloudtune.spec.sweep.values_from_arguments`), so every rank trains with the same values.

Pure: no SDK import, nothing written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cloudtune.errors import UnsupportedSpec
from cloudtune.spec.sweep import ParameterRange, Scalar, SweepSpec, format_value, safe_name, trial_spec

if TYPE_CHECKING:
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec


def wire_name(path: str) -> str:
    """The name a tuning service passes a value under: the option path with `.` as `__` (Azure ML search-space
    names and Vertex AI parameter ids take no dots; SageMaker takes the same name so the container reads one form)."""
    return safe_name(path)


def compact_suffix(suffix: str) -> str:
    """The per-launch suffix without its dashes and century (`20260101-000000-abcd` -> `260101000000abcd`): as unique,
    for names that have little room (SageMaker tuning jobs: 32 characters)."""
    digits = suffix.replace("-", "")
    return digits[2:] if len(digits) > 16 and digits[:2] == "20" else digits


def short_name(name: str, suffix: str, max_len: int, what: str, notes: list[str]) -> str:
    """`name-<compact suffix>` in at most `max_len` characters: the spec's name is shortened (trailing '-' dropped),
    with a plan note saying so."""
    tail = compact_suffix(suffix)
    room = max_len - len(tail) - 1
    if room < 1:
        raise UnsupportedSpec(f"the launch suffix {suffix!r} leaves no room in {what} ({max_len} characters)",
                              fix="launch again (a new suffix is drawn)")
    head = name[:room].rstrip("-")
    if head != name:
        notes.append(f"{what} are at most {max_len} characters: the sweep is named {head}-{tail} (the spec's name "
                     f"shortened to {len(head)})")
    return f"{head}-{tail}"


def parameter_loc(spec: "JobSpec", path: str) -> tuple[str, ...]:
    """The field path of swept option `path` (canonical, as `check_sweep` left it) as the spec wrote it: the bare
    `precision` for `hyperparameters.precision` when that is the key in the file or in a `--set`, so an error names
    the line the user wrote."""
    origin = spec.origin
    bare = path.removeprefix("hyperparameters.")
    for name in (path, bare):
        loc = ("sweep", "parameters", name)
        if loc in origin.lines or loc in origin.overridden:
            return loc
    return ("sweep", "parameters", path)


def shown_values(values: dict[str, Scalar]) -> str:
    """`name=value, ...` as a trial's values are written in notes and errors."""
    return ", ".join(f"{name}={format_value(value)}" for name, value in values.items())


def sweep_trial(spec: "JobSpec", values: dict[str, Scalar]) -> "JobSpec":
    """The job one trial of `spec`'s sweep runs with `values` (`cloudtune.spec.sweep.trial_spec`), for the plan-time
    checks. Each value was checked alone when the spec loaded; values that the train options refuse together are a
    SpecError (InvalidInput, exit 2) at `sweep.parameters` (at the parameter, for one value) naming the values and
    the rule, never pydantic's own error."""
    try:
        return trial_spec(spec, values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        message, _, fix = str(err["msg"]).removeprefix("Value error, ").partition("\nTo fix: ")
        where = ".".join(str(part) for part in err["loc"])
        field = f"train.{where}: " if where else ""  # a model-level rule names its fields itself
        loc = parameter_loc(spec, next(iter(values))) if len(values) == 1 else ("sweep", "parameters")
        hint = "narrow the ranges so that no trial takes these values together" + (f" (or: {fix})" if fix else "")
        raise spec.origin.error([spec.origin.issue(
            loc, f"the trial with {shown_values(values)} is not a valid job: {field}{message}", hint)]) from None


def numbers(rng: ParameterRange) -> bool:
    """Whether every choice of `rng` is a number (not a bool or text)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng.choice or ())


def choices_fix(rng: ParameterRange, limit: int) -> str:
    """The fix for a choice with more values than a service takes (`limit`): fewer values, or the range of the same
    type that spans them: `{int: [LOW, HIGH]}` for whole numbers (an int option's choices are ints once the spec is
    loaded), `{uniform: [LOW, HIGH]}` for other numbers; text and booleans have no range."""
    values = list(rng.choice or ())
    fix = f"give at most {limit} values"
    if values and numbers(rng):
        low, high = min(values), max(values)
        kind = "int" if all(isinstance(v, int) for v in values) else "uniform"
        fix += f", or the range {{{kind}: [{low}, {high}]}}"
    return fix


def grid_values(path: str, rng: ParameterRange, limit: int, service: str) -> list[Any]:
    """The values of a grid axis (a choice, or each whole number of an int range); UnsupportedSpec over `limit`."""
    values = rng.grid()
    if len(values) > limit:
        raise UnsupportedSpec(f"sweep.parameters.{path}: {len(values)} grid values; {service} takes at most {limit} "
                              "per parameter", fix=f"give at most {limit} values, or use algorithm: random or bayesian")
    return values


def cost_note(trial: "Plan", sweep: SweepSpec, max_runtime_s: int) -> str:
    """The sweep's cost bound: max_trials x one trial's price per hour x its max_runtime (every trial is the same job,
    so the largest trial is any trial); unknown when the trial's price is."""
    hours = max_runtime_s / 3600
    if trial.estimated_usd_per_hour is None:
        return f"cost bound: {sweep.max_trials} trials x {hours:g} h max_runtime each (no price for {trial.instance_type})"
    bound = sweep.max_trials * trial.estimated_usd_per_hour * hours
    return (f"cost bound: {sweep.max_trials} trials x ${trial.estimated_usd_per_hour:.2f}/h x {hours:g} h max_runtime "
            f"= ${bound:,.2f} ({trial.cost_basis}); at most {sweep.parallel_trials} trials run at once")


def summary_note(sweep: SweepSpec) -> str:
    """One line naming what the sweep varies and toward what."""
    parts = []
    for path, rng in sorted(sweep.ranges().items()):
        bounds = rng.bounds
        parts.append(f"{path} {rng.kind} {list(rng.choice or ()) if bounds is None else list(bounds)}"
                     + (" log" if rng.int is not None and rng.log else ""))
    return (f"sweep: {sweep.algorithm} search over {', '.join(parts)}; objective {sweep.objective.direction} "
            f"{sweep.objective.metric}; each trial is this job with its values applied before any rank starts")


def sweep_plan(trial: "Plan", sweep: SweepSpec, max_runtime_s: int, request: dict[str, Any], notes: list[str],
               outputs: str, **changes: Any) -> "Plan":
    """The sweep's Plan, made from its trial's (`trial`, the job's own compiled Plan): the tuning `request`, the notes
    so far followed by what the sweep varies, its cost bound and where each trial's outputs go (`outputs`), and no
    model of its own (the best trial's is the sweep's); `changes` are further Plan fields (a cloud's own job name)."""
    notes = [*notes, summary_note(sweep), cost_note(trial, sweep, max_runtime_s), outputs]
    return replace(trial, request=request, notes=tuple(notes), model_uri=None, **changes)
