"""Preflight: the errors a job would hit in its first minute, found on this machine before anything is uploaded.

`check_spec_inputs(spec)` runs at plan time for every launcher (through `cloudtune.jobinputs.check_local_inputs`)
and imports neither torch nor transformers. For the local inputs of a `train` job it reads the first records of
each data file (encoding, format, the fields the task needs, the labels), checks that a local model directory
holds a config, weights and tokenizer files, checks `max_seq_len` against the model's position limit, and renders
the chat template (with jinja2 alone) for each sequence of roles in conversational data (`messages`, and
TRL's conversational prompt-completion), refusing a message field the template never reads. It also makes the
recipe's refusals that the spec and the catalog decide (cloudtune.preflight.recipe: precision per accelerator,
QLoRA on a TPU, LoRA-adapter rules) and refuses a Hub-only option (`train.revision`) with a model that is no Hub
id (`hub_only_problems`), so `validate` and every dry run refuse what the job would. Every
problem is one line naming the file (the user's path, relative to the working directory when under it) or the
spec field, and the fix; all of them are raised together as a `PreflightError` (exit 2).

`cloudtune.preflight.deep` goes further (`cloudtune validate --deep`): it loads the tokenizer and the model
skeleton and renders one record of each shape.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import TYPE_CHECKING

from cloudtune.data.modeldir import max_seq_len_problem, model_dir_problems, read_config
from cloudtune.errors import JobInputError
from cloudtune.preflight.problems import PreflightError, display_path, local_input

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec, TrainSpec

__all__ = ["PreflightError", "check_spec_inputs", "display_path", "spec_problems"]


def _audio_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """text-to-audio: every clip's header (cloudtune.data.audio): unreadable, empty, too short, no description."""
    from cloudtune.data.audio import clip_problems, find_clips

    problems: list[str] = []
    for role in ("train", "eval"):
        path = local_input(spec, getattr(train.data, role))
        if path is None:
            continue
        try:
            clips = find_clips(path, train.data.text_field, display_path(path))
        except JobInputError as exc:
            problems.append(str(exc))
            continue
        problems += clip_problems(clips, train.audio.min_seconds, train.data.text_field)
    model_dir = _local_model_dir(spec, train)
    if model_dir is not None and (model_dir / "config.json").is_file():  # a MusicGen config, read without transformers
        from cloudtune.preflight.audio import model_type_problem

        try:
            model_type = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None  # an unreadable config is the deep check's to report, with transformers' words
        problem = model_type_problem(model_type, display_path(model_dir)) if model_type is not None else None
        problems += [problem] if problem else []
    return problems


def _data_problems(spec: "JobSpec", train: "TrainSpec") -> tuple[list[str], list[str]]:
    """(problems, warnings) of the sampled local data of the task."""
    from cloudtune.preflight.data import (check_labels, check_lm_records, classification_rows, sample_input)

    if train.task == "text-to-audio":
        return _audio_problems(spec, train), []
    data = train.data
    problems: list[str] = []
    warnings: list[str] = []
    samples = {}
    for role in ("train", "eval"):
        name = getattr(data, role)
        path = local_input(spec, name)
        if path is None:
            continue
        try:
            samples[role] = sample_input(path, data.text_field, display_path(path))
        except JobInputError as exc:
            problems.append(str(exc))
    try:
        if train.task == "preference":
            from cloudtune.preflight.preference import check_preference_samples

            warnings += check_preference_samples(samples, train)
        elif train.task == "seq-classification":
            rows = {role: classification_rows(recs, data) for role, (recs, _) in samples.items()}
            if "train" in rows:
                check_labels(rows["train"], samples["train"][1], rows.get("eval"), data)
        else:
            fmt = check_lm_records(samples["train"][0], data) if "train" in samples else None
            if "eval" in samples:
                check_lm_records(samples["eval"][0], data, fmt)
            if fmt in ("chat", "instruction"):  # conversational data: messages, or prompt/completion message lists
                from cloudtune.preflight.template import template_problem

                records = [r for recs, _ in samples.values() for r in recs]
                problem = template_problem(records, data, _local_model_dir(spec, train), fmt)
                problems += [problem] if problem else []
    except JobInputError as exc:
        problems.append(str(exc))
    return problems, warnings


def _local_model_dir(spec: "JobSpec", train: "TrainSpec") -> Path | None:
    from cloudtune.data.savedmodel import find_saved_model

    path = local_input(spec, train.model)
    return find_saved_model(path) if path is not None else None


def _model_problems(spec: "JobSpec", train: "TrainSpec") -> tuple[list[str], list[str]]:
    model_dir = _local_model_dir(spec, train)
    if model_dir is None:
        return [], []
    shown = display_path(model_dir)
    problems = model_dir_problems(model_dir, shown)
    config, _ = read_config(model_dir, shown)
    if config is None:
        return problems, []
    error, warning = max_seq_len_problem(config, train.hyperparameters.max_seq_len, f"{shown}/config.json")
    return problems + ([error] if error else []), [warning] if warning else []


def hub_only_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """The options that select something of a Hub repository, given with a `train.model` that is none: a local
    directory, an input's URI, or a `job:<JOB>` model (each an input after `with_model_input`). `train.revision`
    is the one (from_pretrained ignores it for a directory); the gated-model token check of the deep check already
    runs for a Hub id only, and trust_remote_code applies to a directory's own code too."""
    if train.revision is None or train.model not in spec.inputs:
        return []
    uri = spec.inputs[train.model]
    path = local_input(spec, train.model)
    what = f"the local path {display_path(path)}" if path is not None else f"input {train.model!r} ({uri})"
    return [f"train.revision {train.revision!r}: train.model is {what}, not a Hub model id, and a revision picks a "
            f"branch, tag or commit of a Hub repository only (it would be ignored). To fix: remove `revision:`; to "
            f"train that revision, download it (huggingface-cli download ORG/NAME --revision {train.revision} "
            f"--local-dir DIR) and set train.model to DIR, or set train.model to the Hub id"]


def check_spec_inputs(spec: "JobSpec") -> list[str]:
    """Check the local inputs of `spec` (after `with_model_input`); raise PreflightError listing every problem.
    Returns warnings (one line each) that do not stop the job. Remote inputs and hub models are not read."""
    train = spec.train
    if train is None:
        return []
    from cloudtune.preflight.recipe import adapter_problems, precision_problems

    problems = precision_problems(spec, train) + hub_only_problems(spec, train)
    if train.task == "text-to-image":
        return _image_job_problems(spec, train, problems)
    model_problems, warnings = _model_problems(spec, train)
    problems += model_problems
    model_dir = _local_model_dir(spec, train)
    problems += adapter_problems(train, model_dir, display_path(model_dir) if model_dir else "")
    data_problems, data_warnings = _data_problems(spec, train)
    problems += data_problems
    warnings += data_warnings
    from cloudtune.memory_check import model_facts
    from cloudtune.preflight.knobs import disk_problem, knob_notes, knob_problems

    problems += knob_problems(spec, train)
    disk = disk_problem(spec, model_facts(spec))
    problems += [disk] if disk else []
    if problems:
        raise PreflightError(problems)
    return warnings + knob_notes(train)


def spec_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """The refusals of `check_spec_inputs` that the options decide, without reading the data: precision and
    quantization per accelerator, Hub-only options, a local model's files, position limit and adapter rules, the
    knobs and publishing against the accelerator, the disk; for text-to-image its CUDA-only options. One line each,
    with its fix. `spec` has been through `with_model_input`; `train` is the train section to check (a sweep
    trial's: cloudtune.preflight.sweep). Reads no data file; imports no torch."""
    from cloudtune.memory_check import model_facts
    from cloudtune.preflight.knobs import disk_problem, knob_problems
    from cloudtune.preflight.recipe import adapter_problems, precision_problems

    problems = precision_problems(spec, train) + hub_only_problems(spec, train)
    if train.task == "text-to-image":
        from cloudtune.preflight.images import cuda_only_problems

        return problems + cuda_only_problems(spec, train, _accelerator_is_cuda(spec))
    problems += _model_problems(spec, train)[0]
    model_dir = _local_model_dir(spec, train)
    problems += adapter_problems(train, model_dir, display_path(model_dir) if model_dir else "")
    problems += knob_problems(spec, train)
    disk = disk_problem(spec, model_facts(spec))
    return problems + ([disk] if disk else [])


def _accelerator_is_cuda(spec: "JobSpec") -> bool | None:
    """Whether the job trains on a CUDA GPU (the catalog's vendor); None when the catalog does not know it."""
    from cloudtune.catalog import CatalogError, load_catalog

    accel = spec.resources.accel
    if accel.is_cpu:
        return False
    try:
        info = load_catalog().info(accel.name)
    except CatalogError:
        return None
    return None if info is None else info.vendor == "nvidia"


def _image_job_problems(spec: "JobSpec", train: "TrainSpec", problems: list[str]) -> list[str]:
    """The text-to-image checks (cloudtune.preflight.images): a local pipeline dir, the images' headers and
    captions, CUDA-only options; raises PreflightError listing every problem."""
    from cloudtune.preflight.images import cuda_only_problems, image_data_problems, pipeline_dir_problems

    model_dir = _local_model_dir(spec, train)
    if model_dir is not None:
        problems = problems + pipeline_dir_problems(model_dir, display_path(model_dir))
    problems = problems + cuda_only_problems(spec, train, _accelerator_is_cuda(spec))
    inputs = {n: p for n in (train.data.train, train.data.eval) if n and (p := local_input(spec, n)) is not None}
    problems += image_data_problems(train, inputs, {n: display_path(p) for n, p in inputs.items()})
    if problems:
        raise PreflightError(problems)
    return []
