"""The checks a loaded spec meets on the plan side, before a launcher plans it: what the spec cannot know by itself.

- the provider names it uses (`resources.instance_type`, `providers`): the launcher registry's
  (`cloudtune.launcher.check_provider_names`);
- a `train.model: job:<JOB>`: a finished job's model in the job store (`cloudtune.jobmodel`; the store is handed in
  as `find_job` by the app, which owns it);
- the local inputs and their content, a command job's code dir, the credential-like values
  (`check_offline`: what a dry run checks that needs no provider).

`cloudtune validate` runs them all (`check_offline`); `cloudtune.api.plan` and `launch` run `check_spec` and resolve
the `job:` model before the launcher plans, and the launcher checks the inputs itself. Each problem is an
InvalidInput (exit 2) named by the spec's field and line, as the loader's own errors are.
"""

from __future__ import annotations

from pathlib import Path

from cloudtune.jobinputs import check_local_inputs, with_model_input
from cloudtune.jobmodel import FindJob, job_model_issues, resolve_job_model
from cloudtune.launcher import check_provider_names
from cloudtune.preflight.sweep import check_sweep_values
from cloudtune.spec import JobSpec


def check_spec(spec: JobSpec, find_job: FindJob) -> None:
    """The provider names, then the `job:` model (a SpecError for each, at its line)."""
    check_provider_names(spec)
    issues = job_model_issues(spec, find_job)
    if issues:
        raise spec.origin.error(issues)


def check_offline(spec: JobSpec, find_job: FindJob) -> list[str]:
    """Run the checks a dry run makes that need no provider, so that `cloudtune validate` and the dry run agree:
    `check_spec`, each value of a sweep against its trials' plan checks (cloudtune.preflight.sweep), local inputs
    exist and a local `train.model` is a saved model (cloudtune.jobinputs.check_local_inputs), and a command job's
    code dir bundles. (The accelerator name is checked against the catalog with the spec itself.)

    Returns the warnings that do not stop a job; raises a CloudtuneError (exit 2) naming what is wrong. `spec` has
    been through `resolve_paths` (as `load_spec` returns it)."""
    check_spec(spec, find_job)
    # a local model travels as an input: checked and scanned like the data
    shaped = with_model_input(resolve_job_model(spec, None, find_job))
    check_sweep_values(shaped)  # each value of a sweep meets the checks of its trials' plans, as a dry run checks it
    _quantize_anywhere(spec)
    notes = list(check_local_inputs(shaped) or [])
    if spec.resources.accelerator != "cpu":
        from cloudtune.catalog import load_catalog

        meaning = load_catalog().meaning_note(spec.resources.accelerator)  # `A100:8`: which part it means
        notes += [meaning] if meaning else []
    if spec.command is not None:
        from cloudtune.bundle import build_bundle, left_out_note

        note = left_out_note(build_bundle(Path(spec.code), include=spec.include))
        notes += [note] if note else []
    from cloudtune.secretfiles import secret_notes

    return notes + secret_notes(spec.env, shaped.inputs)


def _quantize_anywhere(spec: JobSpec) -> None:
    """`lora.quantize` where no provider has a CUDA GPU for it: a TPU, or `cpu` on a machine without one (a local
    job uses this machine's GPUs; a cloud job on cpu has none). The dry run of each provider refuses the rest
    (cloudtune.memory_check.check_quantize)."""
    from cloudtune.memory_check import check_quantize, local_cuda

    accelerator = spec.resources.accelerator
    if accelerator.upper().startswith("TPU"):
        check_quantize(spec, "any", accelerator)
    elif accelerator == "cpu" and not local_cuda():
        check_quantize(spec, "any", None)
