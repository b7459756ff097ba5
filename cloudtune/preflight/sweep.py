"""The plan-time checks of a sweep's trials: every value a sweep can give an option goes through the checks a plain
job with that value gets, so `validate` and every dry run refuse a value that would fail its trials.

A sweep's plan is made for one trial (the largest: `cloudtune.spec.sweep.largest_values`), and the cloud's request
for the spec's own values; the values of the other trials are chosen later, by Optuna or the cloud's tuning service.
So each value of each parameter (every `choice`, both booleans, both ends of a range) is applied alone to the job
(`cloudtune.kit.sweep.sweep_trial`) and checked with `cloudtune.preflight.spec_problems` (precision per
accelerator, the recipe's refusals, the optimizer and attention knobs against the accelerator, a local model's
position limit, the disk). A problem the spec's own values already have is the plain job's to report; each new one
is one issue at `sweep.parameters.<name>` (its YAML line) naming the value, with "To fix: remove <value> from the
choice" (or narrow the range).

The trial the plan sizes is built here too, so values that the train options refuse together are one clear error
before any launcher plans them. Reads no data file; imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudtune.errors import SpecIssue
from cloudtune.kit.sweep import parameter_loc, sweep_trial
from cloudtune.preflight import spec_problems
from cloudtune.spec.sweep import ParameterRange, Scalar, format_value, largest_values

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec

__all__ = ["check_sweep_values", "sweep_value_issues"]


def check_sweep_values(spec: "JobSpec") -> None:
    """Refuse the sweep values whose trials a plain job's plan would refuse, and a sized trial whose values the train
    options refuse together: one SpecError (InvalidInput, exit 2) listing each, at its line. `spec` has been through
    `with_model_input`; a spec without a sweep, or a command job's, passes."""
    if spec.sweep is None or spec.train is None:
        return
    sweep_trial(spec, largest_values(spec.sweep))  # the trial every plan sizes: a SpecError if it is no job
    issues = sweep_value_issues(spec)
    if issues:
        raise spec.origin.error(issues)


def sweep_value_issues(spec: "JobSpec") -> list[SpecIssue]:
    """One issue per problem that a value of a swept option brings to its trial and the spec's own values do not have
    (see the module doc), in parameter order. `spec` is a train job with a checked sweep, after `with_model_input`."""
    assert spec.sweep is not None and spec.train is not None
    known = set(spec_problems(spec, spec.train))
    issues: list[SpecIssue] = []
    for path, rng in spec.sweep.ranges().items():
        for value in rng.samples():
            trial = sweep_trial(spec, {path: value})
            assert trial.train is not None
            for problem in spec_problems(trial, trial.train):
                if problem not in known:
                    issues.append(_value_issue(spec, path, rng, value, problem))
    return issues


def _value_issue(spec: "JobSpec", path: str, rng: ParameterRange, value: Scalar, problem: str) -> SpecIssue:
    """The issue of `value` of `path`'s range `rng`, whose trial `problem` (a preflight line, `... To fix: ...`)
    refuses."""
    what, _, fix = problem.replace("\nTo fix: ", " To fix: ").partition(" To fix: ")
    shown = format_value(value)
    remove = (f"remove {shown} from the choice" if rng.choice is not None
              else f"narrow the range so that it leaves {shown} out")
    return spec.origin.issue(parameter_loc(spec, path), f"the value {shown} would be refused in its trials: "
                             f"{what.rstrip('. ')}", remove + (f" (or, for every trial: {fix.rstrip('.')})" if fix else ""))
