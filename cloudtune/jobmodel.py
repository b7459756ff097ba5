"""`train.model: job:<JOB>`: a finished job's model as the model a new fine-tune starts from, on any provider.

`<JOB>` is a job id, or a prefix of one the job store resolves to a single job (job ids start with the spec's name,
so `job:my-run` names the only `my-run-...` job). The job store belongs to the app: it is handed in as `find_job`
(`cloudtune.store.JobStore.lookup`, which reads and never writes), and nothing else is asked. `cloudtune.api`
resolves the reference before a launcher plans, so the plan stays pure. The job must have succeeded (as the store knows it: `cloudtune status JOB`
refreshes a cloud job's state) and have a model location. Its model URI then becomes the new job's model:

- a local directory (a `local` job): used as a local model path, i.e. copied or uploaded with the job like any
  local `train.model` directory;
- an object-store URI (`s3://.../model.tar.gz` of a SageMaker job, `gs://.../model/` of a Vertex AI job): an input
  named `model` that the new job reads where it runs, when its provider reads that store
  (`cloudtune.contracts.clouds.STORE_SCHEMES`); a
  SageMaker channel delivers the model.tar.gz file itself, which the runtime unpacks
  (`cloudtune.runtime.modelarchive.unpacked_model_archive`). Another provider cannot read it: refused, with the fix
  (`cloudtune download JOB DIR`, then `train.model: DIR`).

A job that trained a LoRA adapter without `merge` leaves an adapter, not a model. Its base is the job's own model
(from its recorded plan: a hub id, a local path or an input's URI), which becomes `train.base_model` unless the spec
sets one; a local or remote base travels with the job as the `base_model` input, checked like the model. The
recipe loads the base, applies the adapter and merges it (`cloudtune.train.causal_lm._load`): the adapter's own
`base_model_name_or_path` is not relied on, since it may name a path on another machine or a bucket the container
cannot read as a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloudtune.contracts.clouds import STORE_SCHEMES, is_remote
from cloudtune.errors import InvalidInput, JobNotFound, SpecIssue
from cloudtune.spec import JobSpec, shown
from cloudtune.states import JobState

PREFIX = "job:"
PROVIDER_SCHEMES: dict[str, tuple[str, ...]] = {"local": (), **STORE_SCHEMES}
"""The URI schemes each provider's jobs read as inputs; a provider not listed is left to its own input checks."""


class FoundJob(Protocol):
    """What a job lookup returns (a `cloudtune.store.JobRecord` is one)."""

    job_id: str
    state: str
    model_uri: str | None
    plan: dict[str, Any] | None


FindJob = Callable[[str], FoundJob]
"""A job id (or a unique prefix of one) -> the job's record; raises JobNotFound (`cloudtune.store.JobStore.lookup`)."""


class JobModelError(InvalidInput):
    """`train.model: job:<JOB>` cannot be used: unknown job, not succeeded, no model, another cloud's store."""


@dataclass(frozen=True)
class JobModel:
    """What a `job:` reference resolves to: the job's id, its model (local path or URI) and, for a LoRA adapter,
    the base the adapter was trained on (None for a full model)."""

    job_id: str
    uri: str
    base: str | None = None


def is_job_ref(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def lookup(ref: str, find_job: FindJob) -> JobModel:
    """Resolve `job:<JOB>` with `find_job` (the job store, read-only). JobModelError: no such job (or an ambiguous
    prefix), a job that has not succeeded, or one with no model location."""
    wanted = ref[len(PREFIX):].strip()
    if not wanted:
        raise JobModelError("`job:` names no job", fix="write job:<JOB ID> (see `cloudtune list`)")
    try:
        record = find_job(wanted)
    except JobNotFound as exc:
        raise JobModelError(exc.message, fix=exc.fix) from None
    if record.state != JobState.SUCCEEDED:
        raise JobModelError(f"job {record.job_id} is {record.state}, not succeeded: it has no finished model",
                            fix=f"wait for it to succeed (`cloudtune status {record.job_id}` refreshes its state), "
                                "then launch again")
    if not record.model_uri:
        raise JobModelError(f"job {record.job_id} recorded no model location",
                            fix="give train.model a model directory or hub id instead")
    return JobModel(record.job_id, record.model_uri, _adapter_base(record))


def _adapter_base(record: FoundJob) -> str | None:
    """The base model of a job whose output is a LoRA adapter (lora without merge, not itself started from an
    adapter, which writes merged weights): its train.model as the user gave it (an input's path or URI, or a hub
    id); None when its output is a full model."""
    spec: dict[str, Any] = (record.plan or {}).get("spec") or {}
    train = spec.get("train") or {}
    lora = train.get("lora")
    if not lora or lora.get("merge") or train.get("base_model"):
        return None
    model = str(train.get("model") or "")
    return str((spec.get("inputs") or {}).get(model, model)) or None


def _readable(job_id: str, uri: str, provider: str | None, what: str) -> None:
    """JobModelError when a job of `provider` cannot read `uri` (a local path that is gone, another cloud's URI)."""
    if not is_remote(uri):
        if not Path(uri).exists():
            raise JobModelError(f"the {what} of job {job_id}, {uri}, no longer exists",
                                fix="`cloudtune clean --with-model` removes it; run that job again, or give "
                                    "train.model another model")
        return
    schemes = PROVIDER_SCHEMES.get(provider or "")
    if provider is None or schemes is None or uri.startswith(schemes):
        return
    where = "this machine's disk" if provider == "local" else f"{' or '.join(schemes)} URIs"
    raise JobModelError(f"the {what} of job {job_id} is at {uri}, and a {provider} job reads {where} only",
                        fix=f"download it first: `cloudtune download {job_id} DIR`, then set train.model: DIR "
                            f"(uploaded with the job)")


def _add_input(spec: JobSpec, name: str, uri: str) -> tuple[JobSpec, str]:
    while name in spec.inputs:
        name += "_"
    return spec.model_copy(update={"inputs": {**spec.inputs, name: uri}}), name


def resolve_job_model(spec: JobSpec, provider: str | None, find_job: FindJob | None) -> JobSpec:
    """The spec with `train.model: job:<JOB>` replaced by that job's model (see the module docstring): a local path,
    or an input `model` holding the URI; and, for an adapter, `train.base_model` set (a URI as input `base_model`).
    `provider` (None: not known yet) refuses a URI its jobs cannot read. Raises JobModelError, also when there is a
    `job:` model and no `find_job` to look it up with; a spec without a `job:` model is returned as it is."""
    if spec.train is None or not is_job_ref(spec.train.model):
        return spec
    if find_job is None:
        raise JobModelError(f"train.model: {spec.train.model}: a job's model is looked up in the job store before "
                            "a launcher plans", fix="plan it with cloudtune.api.plan (or resolve it first with "
                            "cloudtune.jobmodel.resolve_job_model(spec, provider, JobStore.lookup))")
    try:
        return _resolved(spec, lookup(spec.train.model, find_job), provider)
    except JobModelError as exc:
        raise JobModelError(f"train.model: {spec.train.model}: {exc.message}", fix=exc.fix) from None


def _resolved(spec: JobSpec, found: JobModel, provider: str | None) -> JobSpec:
    assert spec.train is not None
    _readable(found.job_id, found.uri, provider, "model")
    update: dict[str, Any] = {"model": found.uri}
    if is_remote(found.uri):
        spec, update["model"] = _add_input(spec, "model", found.uri)
    if found.base is not None and spec.train.base_model is None:
        update["base_model"] = found.base
        if is_remote(found.base) or found.base.startswith("/"):
            _readable(found.job_id, found.base, provider, "base model")
        if is_remote(found.base):
            spec, update["base_model"] = _add_input(spec, "base_model", found.base)
    return spec.model_copy(update={"train": spec.train.model_copy(update=update)})


def job_model_issues(spec: JobSpec, find_job: FindJob) -> list[SpecIssue]:
    """A `train.model: job:<JOB>` that `find_job` cannot resolve to a finished model, as one issue named by the
    spec's line for train.model (what `cloudtune validate` and every dry run report before planning)."""
    model = spec.train.model if spec.train is not None else None
    if not is_job_ref(model):
        return []
    assert model is not None
    try:
        lookup(model, find_job)
    except JobModelError as exc:
        return [SpecIssue("train.model", f"{shown(model)}: {exc.message}", spec.origin.line_of(("train", "model")),
                          exc.fix or "")]
    return []
