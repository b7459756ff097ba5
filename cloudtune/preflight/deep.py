"""The deep preflight (`cloudtune validate --deep`, and `cloudtune launch` of a local job): what only the model's
own code can tell, checked on this machine in seconds instead of in a billed container.

On top of the plan-time checks it loads the tokenizer and the model skeleton (built from its config on the meta
device: no weights read, no memory taken), checks `max_seq_len` against the loaded config, resolves the LoRA
target modules against the model, and renders and tokenizes one record of each shape of the local data with the
recipe's own encoders (for chat: each distinct sequence of roles, through the chat template that will be used),
so a template that refuses a role, a missing field or an empty tokenizer is one line naming the file and line.
Imports torch and transformers; the plain plan-time checks stay in `cloudtune.preflight`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.data.chat import check_messages
from cloudtune.data.encode import encode_records
from cloudtune.data.hub import hub_access
from cloudtune.data.labels import label_mapping
from cloudtune.data.lora import resolve_target_modules
from cloudtune.data.modeldir import check_tokenizer, is_adapter_dir, max_seq_len_problem
from cloudtune.data.records import detect_format, where_field
from cloudtune.data.savedmodel import find_saved_model
from cloudtune.errors import InvalidInput, JobInputError
from cloudtune.preflight.preference import check_preference_data
from cloudtune.preflight.problems import PreflightError, display_path, local_input

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec, TrainSpec

MAX_SHAPES = 20


def _model_source(spec: "JobSpec", train: "TrainSpec") -> tuple[str | None, str, bool]:
    """(source to load from or None when it cannot be read here, how errors name it, local files only)."""
    from cloudtune.spec import is_remote

    if train.model in spec.inputs:
        uri = spec.inputs[train.model]
        if is_remote(uri):
            return None, uri, True
        found = find_saved_model(Path(uri))
        return (str(found) if found else uri), display_path(found or uri), True
    if is_remote(train.model):
        return None, train.model, True
    return train.model, train.model, hub_access(train.model)


def load_skeleton(source: str, shown: str, train: "TrainSpec", local_only: bool,
                  num_labels: int | None) -> tuple[Any, Any]:
    """(tokenizer, model skeleton on the meta device). Raises JobInputError (one line) when either cannot load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad tokenizer
        raise JobInputError(f"train.model: cannot load the tokenizer of {shown}: {_first_line(exc)}") from None
    check_tokenizer(tokenizer, shown)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        if train.task == "seq-classification":
            config.num_labels = num_labels or 2
        auto = AutoModelForSequenceClassification if train.task == "seq-classification" else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config)
    except Exception as exc:  # noqa: BLE001
        raise JobInputError(f"train.model: cannot build the model of {shown} from its config: {_first_line(exc)}") from None
    return tokenizer, model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shapes(records: list[tuple[str, Any]], data: Any, fmt: str) -> list[tuple[str, Any]]:
    """One record of each shape: for chat, the first record of each distinct sequence of roles; else the first."""
    if fmt != "chat":
        return records[:1]

    seen: dict[tuple[str, ...], tuple[str, Any]] = {}
    for where, rec in records:
        messages = check_messages(rec.get(data.messages_field), where, data.messages_field)
        roles = tuple(m["role"] for m in messages)
        if roles not in seen:
            seen[roles] = (where, rec)
            if len(seen) >= MAX_SHAPES:
                break
    return list(seen.values())


def _check_lm_data(records: list[tuple[str, Any]], train: "TrainSpec", tokenizer: Any) -> list[str]:
    """Render and tokenize one record of each shape with the recipe's encoders; returns notes."""
    data, max_len = train.data, train.hyperparameters.max_seq_len
    fmt = detect_format(records[0][1], data, records[0][0])
    conversational = fmt == "chat" or (fmt == "instruction" and not isinstance(records[0][1].get(data.prompt_field), str))
    if conversational and data.chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise JobInputError("train.data.chat_template: the chat data format needs a chat template, and this "
                            "model's tokenizer has none; set train.data.chat_template or use a model that has one")
    shapes = _shapes(records, data, fmt)
    encode_records(shapes, data, tokenizer, max_len, fmt)
    return [f"{fmt} data: {len(shapes)} record shape(s) rendered and tokenized"]


def _check_cls_data(records: list[tuple[str, Any]], train: "TrainSpec", tokenizer: Any) -> list[str]:
    where, rec = records[0]
    text = where_field(rec, train.data.text_field, where, "train.data.text_field")
    if not tokenizer(text, add_special_tokens=True)["input_ids"]:
        raise JobInputError(f"{where}: the text produced no token with this model's tokenizer")
    return ["classification data: first record tokenized"]


DATA_CHECKS: dict[str, Callable[[list[tuple[str, Any]], "TrainSpec", Any], list[str]]] = {
    "causal-lm": _check_lm_data, "seq-classification": _check_cls_data, "preference": check_preference_data}
"""The data check of each task whose model `load_skeleton` builds (text-to-image and text-to-audio have their own)."""


def _num_labels(spec: "JobSpec", train: "TrainSpec") -> int | None:
    from cloudtune.preflight.data import classification_rows, sample_input

    if train.data.labels is not None:
        return len(train.data.labels)
    path = local_input(spec, train.data.train)
    if path is None:
        return None

    records, _ = sample_input(path, train.data.text_field, display_path(path))
    try:
        return label_mapping(classification_rows(records, train.data), None)[2]
    except JobInputError:
        return None


def deep_check(spec: "JobSpec") -> list[str]:
    """Run the plan-time checks, then the deep ones, on `spec` (as loaded). Raises PreflightError (exit 2) with
    every problem, one line each; returns notes: what was checked, warnings, and how long it took."""
    from cloudtune.jobinputs import check_local_inputs, with_model_input

    started = time.monotonic()
    spec = with_model_input(spec)
    notes = [f"warning: {w}" for w in check_local_inputs(spec)]
    train = spec.train
    if train is None:
        return notes + ["command job: no model or data to check"]
    _require_training_extras()
    source, shown, local_only = _model_source(spec, train)
    if source is not None and source == train.model and not local_only:  # a hub id this machine can reach
        from cloudtune.data.hub import gated_problem

        gated = gated_problem(train.model, spec.secrets)
        if gated:
            raise PreflightError([gated])
    if source is None:
        return notes + [f"train.model {shown} is remote: not loaded here"]
    if train.task == "text-to-image":
        from cloudtune.preflight.images import pipeline_tokenizers

        return notes + pipeline_tokenizers(source, shown, local_only) + [
            f"deep check took {time.monotonic() - started:.1f} s"]
    if is_adapter_dir(source):
        return notes + [f"train.model {shown} is a LoRA adapter: the job merges it onto its base; not loaded here"]
    if train.task == "text-to-audio":  # the clips' headers were read by the plan-time check above
        from cloudtune.preflight.audio import musicgen_skeleton

        try:
            notes += musicgen_skeleton(source, shown, train, local_only)
        except JobInputError as exc:
            raise PreflightError([str(exc)]) from None
        return notes + [f"deep check took {time.monotonic() - started:.1f} s"]
    problems: list[str] = []
    try:
        tokenizer, model = load_skeleton(source, shown, train, local_only, _num_labels(spec, train))
    except JobInputError as exc:
        raise PreflightError([str(exc)]) from None
    notes.append(f"model {shown}: tokenizer ({len(tokenizer)} tokens) and {type(model).__name__} skeleton loaded")
    notes += _model_checks(model, train, shown, problems)
    notes += _data_checks(spec, train, tokenizer, problems)
    if problems:
        raise PreflightError(problems)
    notes.append(f"deep check took {time.monotonic() - started:.1f} s")
    return notes


def _require_training_extras() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(f"the deep check loads the model, which needs {', '.join(missing)} (not installed here)",
                           fix="pip install -e '.[train]' (a checkout) or pip install 'cloudtune[train]'")


def _model_checks(model: Any, train: "TrainSpec", shown: str, problems: list[str]) -> list[str]:
    notes = []
    error, warning = max_seq_len_problem(model.config.to_dict(), train.hyperparameters.max_seq_len,
                                         f"the config of {shown}")
    if error:
        problems.append(error)
    if warning:
        notes.append(f"warning: {warning}")
    if train.lora is not None:
        try:
            notes.append(f"LoRA target modules: {', '.join(resolve_target_modules(model, train.lora.target_modules))}")
        except JobInputError as exc:
            problems.append(str(exc))
    return notes


def _data_checks(spec: "JobSpec", train: "TrainSpec", tokenizer: Any, problems: list[str]) -> list[str]:
    from cloudtune.preflight.data import sample_input

    notes = []
    for role in ("train", "eval"):
        path = local_input(spec, getattr(train.data, role))
        if path is None:
            continue
        try:
            records, _ = sample_input(path, train.data.text_field, display_path(path))
            if records:
                notes += [f"{role}: {n}" for n in DATA_CHECKS[train.task](records, train, tokenizer)]
        except JobInputError as exc:
            problems.append(str(exc))
    return notes
