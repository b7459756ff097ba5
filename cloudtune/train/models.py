"""Loading the model a recipe trains: where it is (a hub id, a local dir, an input, another job's model archive), what
the user called it (for errors and the model card), and the tokenizer and model themselves, checked the way the
plan-time checks check them (`cloudtune.data.modeldir`), with a LoRA adapter merged onto its base.

`load_pretrained(source, task, ...)` -> (tokenizer, model) is what a transformers recipe calls; a recipe on another
library (diffusers) uses `resolve_model_source`, `model_shown` and `check_local_model` and loads with its own
`from_pretrained`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say
from cloudtune.data.hub import hub_access
from cloudtune.data.savedmodel import find_saved_model
from cloudtune.data.modeldir import check_tokenizer, is_adapter_dir, max_seq_len_problem, model_dir_problems
from cloudtune.errors import JobInputError
from cloudtune.runtime.modelarchive import unpacked_model_archive
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import TrainSpec, is_remote


def resolve_model_source(ctx: RuntimeContext, model: str) -> str:
    """An input name -> its local dir (one level down if the dir holds exactly one model subdir; a channel holding
    one model .tar.gz, as SageMaker delivers another job's model.tar.gz, unpacked once: see
    `cloudtune.runtime.modelarchive.unpacked_model_archive`); else as is."""
    if model not in ctx.inputs:
        return model
    path = Path(ctx.inputs[model])
    found = find_saved_model(path) or unpacked_model_archive(path)
    return str(found or path)


def input_source(ctx: RuntimeContext, name: str) -> str | None:
    """The user's own name (the path or URI in the spec) of input `name`, when the job config carries it."""
    sources = ctx.job.get("sources") if isinstance(ctx.job, dict) else None
    value = sources.get(name) if isinstance(sources, dict) else None
    return value if isinstance(value, str) else None


def model_shown(ctx: RuntimeContext, train: TrainSpec) -> str:
    """The model as the user named it: the hub id or path of `train.model`, or the source of the input holding it."""
    if train.model in ctx.inputs:
        return input_source(ctx, train.model) or f"input {train.model!r}"
    return train.model


def base_model_source(ctx: RuntimeContext, train: TrainSpec) -> tuple[str, str] | None:
    """(source, shown) of `train.base_model` (an input's local dir, or a hub id as given); None when unset."""
    if train.base_model is None:
        return None
    shown = input_source(ctx, train.base_model) if train.base_model in ctx.inputs else None
    return resolve_model_source(ctx, train.base_model), shown or train.base_model


def train_model_name(train: TrainSpec, source: str, ctx: RuntimeContext | None = None) -> str:
    """What adapter_config.json names as the base model: a hub id as given, else the user's own path or URI of
    the model (the spec's source of the input that holds it), else the local path it was loaded from."""
    if source == train.model:
        return train.model
    if ctx is not None and train.model in ctx.inputs:
        return input_source(ctx, train.model) or source
    return source


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""The shape of a Hub model id (`name` or `owner/name`)."""


def hub_model_id(ctx: RuntimeContext, train: TrainSpec) -> str | None:
    """`train.model` when the job loaded it from the Hub: the model card's `base_model` metadata, which the Hub
    links to that model's page. None for a model from an input (a local folder or a bucket, whatever its folder is
    called), another job, a URI or a path in the container."""
    model = train.model
    if model in ctx.inputs or model.startswith("job:") or is_remote(model) or Path(model).exists():
        return None
    return model if HUB_ID.fullmatch(model) else None


def model_card_base(ctx: RuntimeContext, train: TrainSpec, source: str) -> str:
    """How the model card names the base model: the model the user named (hub id, path or URI in the spec), never
    a path inside the container; `input 'NAME'` when the job config does not say where that input came from."""
    return model_shown(ctx, train)


def check_local_model(source: str, shown: str) -> None:
    """A local model dir must hold config, weights and tokenizer files (the plan-time check, again in the job)."""
    problems = model_dir_problems(Path(source), shown)
    if problems:
        raise JobInputError(problems[0])


def check_positions(model: Any, max_seq_len: int | None, shown: str) -> None:
    """`max_seq_len` must fit the loaded model's positions (a hard limit: JobInputError; a soft one: a warning)."""
    if max_seq_len is None:
        return
    error, warning = max_seq_len_problem(model.config.to_dict(), max_seq_len, f"the config of {shown}")
    if error:
        raise JobInputError(error)
    if warning:
        say(f"warning: {warning}")


def load_pretrained(source: str, task: str = "causal-lm", num_labels: int | None = None,
                    id2label: dict[int, str] | None = None, *, shown: str | None = None,
                    max_seq_len: int | None = None, base: tuple[str, str] | None = None,
                    load_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) from `source` (a local dir or a hub id), named `shown` (the user's name) in errors.

    A local dir is checked for config, weights and tokenizer files first; a hub id is checked to be reachable (or
    cached) with one short request; the tokenizer must encode text; `max_seq_len` must fit the model's positions.
    A LoRA adapter dir (`is_adapter_dir`) is loaded onto its base and merged (`load_adapter`): `base` is
    (source, shown) of `train.base_model` when set. What transformers cannot load is one JobInputError line naming
    the model. `load_kwargs`: `from_pretrained` keywords (dtype, QLoRA's quantization; see
    `cloudtune.train.loading.model_load_kwargs`); default fp32."""
    shown = shown or source
    local_only = False
    if Path(source).is_dir():
        check_local_model(source, shown)
    else:
        local_only = hub_access(source)
    tokenizer = load_tokenizer(source, shown, local_only)
    if is_adapter_dir(source):
        if load_kwargs and "quantization_config" in load_kwargs:
            raise JobInputError(f"train.lora.quantize: train.model {shown} is a LoRA adapter, which is merged into its "
                                f"base before training, and merging into 4-bit weights rounds the adapter away. To "
                                f"fix: remove quantize, or train on a merged model (lora.merge: true in the job that "
                                f"made it)")
        model = load_adapter(source, shown, base, task, num_labels, id2label, len(tokenizer),
                              {"dtype": (load_kwargs or {}).get("dtype")})
    elif base is not None:
        raise JobInputError(f"train.base_model is set, but train.model {shown} is not a LoRA adapter (no "
                            f"adapter_config.json beside its weights): remove train.base_model")
    else:
        model = load_model(source, shown, local_only, task, num_labels, id2label, load_kwargs)
    check_positions(model, max_seq_len, shown)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 style models: find the last real token / ignore pads
    return tokenizer, model


def adapter_base(adapter: str, shown: str, base: tuple[str, str] | None) -> tuple[str, str, bool]:
    """(source, shown, local files only) of the model a LoRA adapter adapts: `train.base_model` when given, else the
    adapter_config.json's base_model_name_or_path when this job can read it (a hub id, or a directory here).

    JobInputError when neither names a base this job can read: a path of another machine or a bucket URI in
    adapter_config.json is not followed (set train.base_model, or use `train.model: job:<JOB>`, which sets it)."""
    if base is None:
        try:
            name = str(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path") or "")
        except (OSError, ValueError, AttributeError):
            name = ""
        readable = name and (Path(name).is_dir() or not (is_remote(name) or name.startswith(("/", ".", "~"))))
        if not readable:
            raise JobInputError(f"train.model {shown} is a LoRA adapter whose base ({name or 'not named'}) cannot be "
                                f"read in this job: set train.base_model to the base model (hub id, local path or input)")
        base = (name, name)
    source, base_shown = base
    return source, base_shown, (False if Path(source).is_dir() else hub_access(source, "train.base_model"))


def load_adapter(adapter: str, shown: str, base: tuple[str, str] | None, task: str, num_labels: int | None,
                  id2label: dict[int, str] | None, vocab: int, load_kwargs: dict[str, Any] | None = None) -> Any:
    """The base model (see `adapter_base`) with the LoRA adapter at `adapter` applied and merged: a plain model
    (`ct_from_adapter` set), trained from like any other. `vocab`: the adapter dir's tokenizer size, which the base's
    embeddings are grown to before the adapter is applied."""
    from peft import PeftModel

    source, base_shown, local_only = adapter_base(adapter, shown, base)
    if Path(source).is_dir():
        check_local_model(source, base_shown)
    model = load_model(source, base_shown, local_only, task, num_labels, id2label, load_kwargs)
    if vocab > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab)
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # a damaged adapter, or one made for another base
        raise cannot_load("LoRA adapter", f"{shown} (on the base {base_shown})", exc) from None
    say(f"LoRA adapter {shown} applied to {base_shown} and merged")
    merged.ct_from_adapter = True
    merged.ct_new_modules = []  # the classification head, if any, was trained with the adapter
    return merged


def cannot_load(what: str, shown: str, exc: Exception) -> JobInputError:
    """The one-line error for a `what` (model, tokenizer, LoRA adapter) of `shown` that transformers cannot load."""
    text = str(exc).strip()
    return JobInputError(f"train.model: cannot load the {what} of {shown}: {text.splitlines()[0] if text else type(exc).__name__}; "
                         f"check that its files are complete (copy them again), or point train.model at another model")


def load_tokenizer(source: str, shown: str, local_only: bool) -> Any:
    """The tokenizer, checked to encode text, with a pad token (EOS, else a new one) and right padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:  # files missing or unreadable, an unknown tokenizer class
        raise cannot_load("tokenizer", shown, exc) from None
    check_tokenizer(tokenizer, shown)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(source: str, shown: str, local_only: bool, task: str, num_labels: int | None,
                id2label: dict[int, str] | None, load_kwargs: dict[str, Any] | None = None) -> Any:
    """The model (in fp32 unless `load_kwargs` say otherwise); for seq-classification with `num_labels` (and names), its new modules noted in
    `ct_new_modules` (the head LoRA must train and save)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = {k: v for k, v in (load_kwargs or {}).items() if v is not None}
    kwargs.setdefault("dtype", torch.float32)
    try:
        if task == "seq-classification":
            extra: dict[str, Any] = {"num_labels": num_labels}
            if id2label is not None:
                extra |= {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
            with _load_report_quiet():  # transformers' MISSING table for the new head: said in one line below
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    source, local_files_only=local_only, output_loading_info=True, **extra, **kwargs)
            model.ct_new_modules = new_module_names(info.get("missing_keys", ()), getattr(model, "base_model_prefix", ""))
            if model.ct_new_modules and int(os.environ.get("RANK", "0")) == 0:
                print(f"[cloudtune] model: {', '.join(model.ct_new_modules)} not in {shown}: the classification head "
                      f"for {num_labels} labels, initialised randomly and trained by this job", flush=True)
            return model
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:  # weights missing or damaged, an unknown architecture
        raise cannot_load("model", shown, exc) from None
    if getattr(model, "loss_type", None) is None:  # e.g. GPT2LMHeadModel: name it what transformers falls back to,
        model.loss_type = "ForCausalLM"  # which it does with a misleading "loss_type=None ... unrecognized" warning
    return model


class _load_report_quiet:
    """While loading a model with a new head: transformers' state-dict load report (a table of the head's
    `MISSING` weights, logged as a warning) is held back; the recipe says it in one line. Other warnings pass."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("transformers.modeling_utils")
        self.filter = NotLoadReport()
        self.logger.addFilter(self.filter)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeFilter(self.filter)


class NotLoadReport:
    """Drops a load report that lists only MISSING weights (the new head); one that lists unexpected, mismatched or
    unconverted weights passes, since those are the user's to read."""

    def filter(self, record: Any) -> bool:
        text = str(record.msg)
        return not ("LOAD REPORT" in text and "MISSING" in text
                    and not any(word in text for word in ("UNEXPECTED", "MISMATCH", "CONVERSION")))


def new_module_names(missing_keys: Any, base_prefix: str = "") -> list[str]:
    """The modules a checkpoint did not hold (newly initialised: a classification head and its parts), from the
    parameter names transformers reports missing: `score.weight` -> `score`, `classifier.dense.bias` -> `classifier`,
    `bert.pooler.dense.weight` -> `pooler` (a part inside the base model `base_prefix`, never the base itself)."""
    names = set()
    for key in missing_keys:
        parts = str(key).split(".")
        if len(parts) < 2:
            continue
        if parts[0] == base_prefix:
            if len(parts) > 2:
                names.add(parts[1])
        else:
            names.add(parts[0])
    return sorted(names)
