"""The built-in causal-LM recipe: fine-tune a Hugging Face model (all weights, or a LoRA adapter) with the Trainer.

Data shapes (TRL's names): `text`, `prompt` + `completion` (loss on the completion only) and `messages` (loss on
the assistant turns only), loaded and tokenised by 🤗 Datasets; optional padding-free packing (see
`cloudtune.train.data`). The training flow (`run_training`)
is shared with the seq-classification recipe.

Reads only the RuntimeContext and the spec. Works in one process or under torchrun (DDP; gloo on CPU);
only rank 0 prints, writes the model and writes metrics. Checkpoints are complete-or-absent (see
`cloudtune.train.checkpoints`); a restart resumes from the newest complete one; SIGTERM saves one and exits 143.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.runtime.xla import xla_device_type
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.checkpoints import CheckpointStore, fault_point
from cloudtune.train.loading import (
    decide_gradient_checkpointing,
    model_load_kwargs,
    prepare_quantized,
    with_gradient_checkpointing,
)
from cloudtune.train.logfmt import phase
from cloudtune.train.logfmt import (  # noqa: F401  (re-exported: the log formats are part of this recipe's contract)
    eval_line,
    perplexity,
    CHECKPOINT_LOG_FORMAT,
    CLS_EVAL_LOG_FORMAT,
    EARLY_STOP_LOG_FORMAT,
    EVAL_LOG_FORMAT,
    LOGGING_STEPS,
    LOG_PREFIX,
    METRIC_REGEXES,
    RESUME_LOG_FORMAT,
    SIGTERM_EXIT_CODE,
    SIGTERM_LOG_FORMAT,
    STEP_LOG_FORMAT,
    TRAIN_DONE_LOG_FORMAT,
    _NUM,
    _rank,
    _say,
)
from cloudtune.train.trainer import (  # noqa: F401  (re-exported; run_training looks _make_trainer_class up here)
    _make_callbacks,
    _make_early_stopping,
    _make_trainer_class,
    _training_arguments,
    device_precision,
    fsdp_layer_classes,
    fsdp_settings,
    resolve_precision,
)


def resolve_model_source(ctx: RuntimeContext, model: str) -> str:
    """An input name -> its local dir (one level down if the dir holds exactly one model subdir; a channel holding
    one model .tar.gz, as SageMaker delivers another job's model.tar.gz, unpacked once: see
    `cloudtune.runtime.modelarchive.unpacked_model_archive`); else as is."""
    if model not in ctx.inputs:
        return model
    from cloudtune.data.savedmodel import find_saved_model
    from cloudtune.runtime.modelarchive import unpacked_model_archive

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


def _check_local_model(source: str, shown: str) -> None:
    """A local model dir must hold config, weights and tokenizer files (the plan-time check, again in the job)."""
    from cloudtune.preflight.model import model_dir_problems

    problems = model_dir_problems(Path(source), shown)
    if problems:
        raise JobInputError(problems[0])


def _check_tokenizer(tokenizer: Any, shown: str) -> None:
    """A tokenizer that encodes text to nothing (transformers builds an empty one from a dir without vocabulary)
    would train on EOS alone with loss 0: refuse it."""
    probe = "the quick brown fox 0123"
    try:
        ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    except Exception as exc:  # noqa: BLE001 - a broken tokenizer fails in many ways
        raise JobInputError(f"train.model: the tokenizer of {shown} cannot encode text ({exc}); save a working "
                            f"tokenizer with the model or point train.model at the base model") from None
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(tokenizer) < 4 or not ids or all(i == unk for i in ids):
        raise JobInputError(f"train.model: the tokenizer of {shown} is empty (vocabulary of {len(tokenizer)}; it "
                            f"encodes text to nothing): the model dir has no usable tokenizer files; save the "
                            f"tokenizer there or point train.model at the base model")


def _check_positions(model: Any, max_seq_len: int | None, shown: str) -> None:
    from cloudtune.preflight.model import max_seq_len_problem

    if max_seq_len is None:
        return
    error, warning = max_seq_len_problem(model.config.to_dict(), max_seq_len, f"the config of {shown}")
    if error:
        raise JobInputError(error)
    if warning:
        _say(f"warning: {warning}")


def _load(source: str, task: str = "causal-lm", num_labels: int | None = None,
          id2label: dict[int, str] | None = None, *, shown: str | None = None,
          max_seq_len: int | None = None, base: tuple[str, str] | None = None,
          load_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) from `source` (a local dir or a hub id), named `shown` (the user's name) in errors.

    A local dir is checked for config, weights and tokenizer files first; a hub id is checked to be reachable (or
    cached) with one short request; the tokenizer must encode text; `max_seq_len` must fit the model's positions.
    A LoRA adapter dir (`is_adapter_dir`) is loaded onto its base and merged (`_load_adapter`): `base` is
    (source, shown) of `train.base_model` when set. What transformers cannot load is one JobInputError line naming
    the model. `load_kwargs`: `from_pretrained` keywords (dtype, QLoRA's quantization; see
    `cloudtune.train.loading.model_load_kwargs`); default fp32."""
    shown = shown or source
    local_only = False
    if Path(source).is_dir():
        _check_local_model(source, shown)
    else:
        from cloudtune.preflight.hub import hub_access

        local_only = hub_access(source)
    tokenizer = _load_tokenizer(source, shown, local_only)
    if is_adapter_dir(source):
        if load_kwargs and "quantization_config" in load_kwargs:
            raise JobInputError(f"train.lora.quantize: train.model {shown} is a LoRA adapter, which is merged into its "
                                f"base before training, and merging into 4-bit weights rounds the adapter away. To "
                                f"fix: remove quantize, or train on a merged model (lora.merge: true in the job that "
                                f"made it)")
        model = _load_adapter(source, shown, base, task, num_labels, id2label, len(tokenizer),
                              {"dtype": (load_kwargs or {}).get("dtype")})
    elif base is not None:
        raise JobInputError(f"train.base_model is set, but train.model {shown} is not a LoRA adapter (no "
                            f"adapter_config.json beside its weights): remove train.base_model")
    else:
        model = _load_model(source, shown, local_only, task, num_labels, id2label, load_kwargs)
    _check_positions(model, max_seq_len, shown)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 style models: find the last real token / ignore pads
    return tokenizer, model


def load_for_training(source: str, *, shown: str, max_seq_len: int | None, base: tuple[str, str] | None,
                      load_kwargs: dict[str, Any] | None) -> tuple[Any, Any]:
    """(tokenizer, model) of a causal LM, checked and loaded as this recipe loads it (see `_load`): the loader of
    recipes that train a causal LM another way (preference tuning)."""
    return _load(source, "causal-lm", shown=shown, max_seq_len=max_seq_len, base=base, load_kwargs=load_kwargs)


def is_adapter_dir(source: str) -> bool:
    """Whether `source` is a directory holding a peft LoRA adapter (adapter_config.json) and no full weights (a
    merged LoRA output keeps its adapter in adapter/, beside full weights, and is a plain model)."""
    from cloudtune.preflight.model import WEIGHT_FILES

    path = Path(source)
    return (path / "adapter_config.json").is_file() and not any((path / w).is_file() for w in WEIGHT_FILES)


def adapter_base(adapter: str, shown: str, base: tuple[str, str] | None) -> tuple[str, str, bool]:
    """(source, shown, local files only) of the model a LoRA adapter adapts: `train.base_model` when given, else the
    adapter_config.json's base_model_name_or_path when this job can read it (a hub id, or a directory here).

    JobInputError when neither names a base this job can read: a path of another machine or a bucket URI in
    adapter_config.json is not followed (set train.base_model, or use `train.model: job:<JOB>`, which sets it)."""
    from cloudtune.preflight.hub import hub_access
    from cloudtune.spec import is_remote

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


def _load_adapter(adapter: str, shown: str, base: tuple[str, str] | None, task: str, num_labels: int | None,
                  id2label: dict[int, str] | None, vocab: int, load_kwargs: dict[str, Any] | None = None) -> Any:
    """The base model (see `adapter_base`) with the LoRA adapter at `adapter` applied and merged: a plain model
    (`ct_from_adapter` set), trained from like any other. `vocab`: the adapter dir's tokenizer size, which the base's
    embeddings are grown to before the adapter is applied."""
    from peft import PeftModel

    source, base_shown, local_only = adapter_base(adapter, shown, base)
    if Path(source).is_dir():
        _check_local_model(source, base_shown)
    model = _load_model(source, base_shown, local_only, task, num_labels, id2label, load_kwargs)
    if vocab > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab)
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # a damaged adapter, or one made for another base
        raise _cannot_load("LoRA adapter", f"{shown} (on the base {base_shown})", exc) from None
    _say(f"LoRA adapter {shown} applied to {base_shown} and merged")
    merged.ct_from_adapter = True
    merged.ct_new_modules = []  # the classification head, if any, was trained with the adapter
    return merged


def _cannot_load(what: str, shown: str, exc: Exception) -> JobInputError:
    text = str(exc).strip()
    return JobInputError(f"train.model: cannot load the {what} of {shown}: {text.splitlines()[0] if text else type(exc).__name__}; "
                         f"check that its files are complete (copy them again), or point train.model at another model")


def _load_tokenizer(source: str, shown: str, local_only: bool) -> Any:
    """The tokenizer, checked to encode text, with a pad token (EOS, else a new one) and right padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:  # files missing or unreadable, an unknown tokenizer class
        raise _cannot_load("tokenizer", shown, exc) from None
    _check_tokenizer(tokenizer, shown)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "right"
    return tokenizer


def _load_model(source: str, shown: str, local_only: bool, task: str, num_labels: int | None,
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
        raise _cannot_load("model", shown, exc) from None
    if getattr(model, "loss_type", None) is None:  # e.g. GPT2LMHeadModel: name it what transformers falls back to,
        model.loss_type = "ForCausalLM"  # which it does with a misleading "loss_type=None ... unrecognized" warning
    return model


class _load_report_quiet:
    """While loading a model with a new head: transformers' state-dict load report (a table of the head's
    `MISSING` weights, logged as a warning) is held back; the recipe says it in one line. Other warnings pass."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("transformers.modeling_utils")
        self.filter = _NotLoadReport()
        self.logger.addFilter(self.filter)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeFilter(self.filter)


class _NotLoadReport:
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


def _evaluate(trainer: Any, when: str, metrics: dict[str, float]) -> None:
    """Evaluate; record eval_loss/eval_accuracy/eval_f1 (+ perplexity for causal LM) as `<key>_<when>`."""
    result = trainer.evaluate()
    for key in ("eval_loss", "eval_accuracy", "eval_f1"):
        if key in result:
            metrics[f"{key}_{when}"] = float(result[key])
    if "eval_accuracy" not in result:
        metrics[f"perplexity_{when}"] = perplexity(float(result["eval_loss"]))
    _say(eval_line(when, result))


def run_training(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec, *, tokenizer: Any, model: Any,
                 train_ds: Any, eval_ds: Any, collator: Any, base_model: str, data_info: dict[str, Any],
                 compute_metrics: Any = None, trainer_base: type | None = None, make_arguments: Any = None,
                 trainer_kwargs: dict[str, Any] | None = None, callbacks: list[Any] | tuple[Any, ...] = ()
                 ) -> dict[str, float]:
    """The shared training flow: Trainer with complete-or-absent checkpoints and resume, SIGTERM handling,
    eval before/after (and every `eval_every` steps), early stopping, the health checks (`cloudtune.train.health`:
    a diverged run exits 66 with one line and writes no model; keep_best writes the best evaluation's weights); rank 0
    writes the model (or adapter), tokenizer, metrics.json and README.md (model card) to ctx.model_dir.

    A recipe on another Trainer subclass (TRL's preference trainers) passes it as `trainer_base` (cloudtune's
    Trainer is combined with it: cloudtune's checkpointing, TRL's loss), `make_arguments(args)` turning the
    TrainingArguments into that trainer's config, its own constructor keywords (`trainer_kwargs`) and `callbacks`."""
    from cloudtune.train import health as ct_health

    hp = train.hyperparameters
    precision = device_precision(hp.precision)
    args = _training_arguments(ctx, train, checkpoint, precision=precision, loss_only=compute_metrics is None, model=model)
    if make_arguments is not None:
        args = make_arguments(args)
    if not hasattr(train_ds, "__len__"):  # a stream: each process reads its own batches (accelerate's
        args.accelerator_config.dispatch_batches = False  # IterableDatasetShard), as flattened batches cannot be concatenated
    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=_say)
    xla = xla_device_type()
    health = ct_health.health_state(train, store, eval_ds, getattr(tokenizer, "pad_token_id", None), xla is not None)
    trainer, (log_cb, sigterm_cb, early) = _build_trainer(train, args, store, health, model=model, tokenizer=tokenizer,
                                                          train_ds=train_ds, eval_ds=eval_ds, collator=collator,
                                                          compute_metrics=compute_metrics, trainer_base=trainer_base,
                                                          trainer_kwargs=trainer_kwargs, extra_callbacks=callbacks)
    if xla is not None:
        _say(f"PyTorch/XLA on {xla}: precision {precision}, batches padded to max_seq_len={hp.max_seq_len}"
             + (", FSDPv2 (SPMD) over the host's devices" if getattr(trainer, "is_fsdp_xla_v2_enabled", False) else ""))

    resume = _agreed_resume(store)
    if resume is not None:
        _say(RESUME_LOG_FORMAT.format(path=resume.path, step=resume.step))
        trainer.ct_last_saved_step = resume.step

    metrics: dict[str, float] = {}
    if health.probe is not None:
        health.probe.check(trainer.model, "base")  # the base model's outputs, once, before training
    if eval_ds is not None:
        _evaluate(trainer, "before", metrics)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, sigterm_cb.handler) if in_main_thread else None
    try:
        try:
            output = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        except ct_health.TrainingDiverged as exc:
            _stop_diverged(ctx, train, store, exc, precision)
        if sigterm_cb.agreed(args.device):
            if trainer.ct_last_saved_step != trainer.state.global_step:
                trainer._save_checkpoint(trainer.model, trial=None)
            _say(SIGTERM_LOG_FORMAT.format(step=trainer.state.global_step))
            fault_point("exit", trainer.state.global_step)
            raise SystemExit(SIGTERM_EXIT_CODE)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    metrics.update(_train_metrics(trainer, output, log_cb.tokens_at_begin, data_info, train_ds, early))
    _say(TRAIN_DONE_LOG_FORMAT.format(**metrics))

    metrics.update(ct_health.load_best(trainer, health))
    if eval_ds is not None:
        _evaluate(trainer, "after", metrics)
    if health.probe is not None:
        warning = health.probe.check(trainer.model, "the end of training")
        if warning:
            _say(ct_health.HEALTH_PREFIX + warning)

    _write_outputs(ctx, train, trainer, tokenizer, base_model, data_info, metrics, precision, xla)
    if train.push_to_hub is not None and trainer.args.process_index == 0:
        from cloudtune.train.publish import publish

        publish(Path(ctx.model_dir), train.push_to_hub)
    return metrics


def _build_trainer(train: TrainSpec, args: Any, store: CheckpointStore, health: Any, *, model: Any, tokenizer: Any,
                   train_ds: Any, eval_ds: Any, collator: Any, compute_metrics: Any, trainer_base: type | None = None,
                   trainer_kwargs: dict[str, Any] | None = None, extra_callbacks: Any = ()
                   ) -> tuple[Any, tuple[Any, Any, Any]]:
    """The Trainer (cloudtune's, combined with `trainer_base` when given; its training_step watched by the health
    checks) with its callbacks: log, SIGTERM, early stopping (or None), health and `extra_callbacks`. Returns
    (trainer, (log callback, SIGTERM callback, early stopping))."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cloudtune.train import health as ct_health

    hp = train.hyperparameters
    log_cb, sigterm_cb = _make_callbacks()
    early = _make_early_stopping(hp.early_stopping_patience) if hp.early_stopping_patience else None
    health_cb = ct_health.make_health_callback(health)
    callbacks = [log_cb, sigterm_cb] + ([early] if early is not None else []) + [health_cb] + list(extra_callbacks)
    trainer_class = _make_trainer_class()
    if trainer_base is not None:  # MRO: cloudtune's overrides, then the base's (e.g. TRL's loss), then Trainer's
        trainer_class = type(f"Cloudtune{trainer_base.__name__}", (trainer_class, trainer_base), {})
    trainer = ct_health.watch_loss(trainer_class)(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=compute_metrics,
        **(trainer_kwargs or {}),
    )
    trainer.ct_store = store
    trainer.ct_last_saved_step = None
    health_cb.attach(trainer)
    for callback in extra_callbacks:  # a recipe's callback that reads the trainer itself (e.g. its reference model)
        if hasattr(callback, "attach"):
            callback.attach(trainer)
    # PyTorch/XLA: fixed shapes (the collator pads to max_seq_len); drop the last partial training batch if one is full
    xla = xla_device_type() is not None
    trainer.ct_train_drop_last = xla and (not hasattr(train_ds, "__len__") or len(train_ds) >= hp.batch_size)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, (log_cb, sigterm_cb, early)


def _agreed_resume(store: CheckpointStore) -> Any:
    """The newest complete checkpoint, the same on every rank (RuntimeError when the ranks see different ones)."""
    import torch.distributed as dist

    resume = store.latest_complete()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        steps: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(steps, resume.step if resume else None)
        if len(set(steps)) != 1:
            raise RuntimeError(f"ranks disagree on the checkpoint to resume from (steps by rank: {steps}); "
                               f"every machine must see the same checkpoint dir contents")
    return resume


def _train_metrics(trainer: Any, output: Any, tokens_at_begin: int, data_info: dict[str, Any], train_ds: Any,
                   early: Any) -> dict[str, float]:
    """train_loss, train_runtime_s, tokens_per_second, global_step (+ train_examples, early_stopped_at_step)."""
    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens = int(trainer.state.num_input_tokens_seen or 0) - tokens_at_begin
    metrics: dict[str, float] = {
        "train_loss": float(output.training_loss),
        "train_runtime_s": runtime,
        "tokens_per_second": tokens / runtime if runtime > 0 else 0.0,
        "global_step": int(trainer.state.global_step),
    }
    if data_info.get("train_examples", 0) is not None:
        metrics["train_examples"] = int(data_info.get("train_examples") or len(train_ds))
    if early is not None and early.stopped_at is not None:
        metrics["early_stopped_at_step"] = early.stopped_at
    return metrics


def _stop_diverged(ctx: RuntimeContext, train: TrainSpec, store: CheckpointStore, exc: Any, precision: str) -> None:
    """A diverged run (`cloudtune.train.health.TrainingDiverged`, raised on every rank alike): rank 0 prints the one
    stop line and records it as the failure reason; every rank exits 66 (class diverged, never retried), writing
    no model."""
    from cloudtune.runtime.bootstrap import _record_failure
    from cloudtune.runtime.exitcodes import EXIT_DIVERGED
    from cloudtune.train.health import last_good_checkpoint, stop_line

    if _rank() == 0:
        line = stop_line(exc, last_good_checkpoint(store, exc.step), train, precision)
        print(line, flush=True)
        _record_failure(ctx, "AlgorithmError: " + line.split("error: ", 1)[1], EXIT_DIVERGED)
    raise SystemExit(EXIT_DIVERGED) from None


def _write_outputs(ctx: RuntimeContext, train: TrainSpec, trainer: Any, tokenizer: Any, base_model: str,
                   data_info: dict[str, Any], metrics: dict[str, float], precision: str, xla: str | None) -> None:
    """Rank 0 writes the model (or adapter), tokenizer, metrics.json and the model card; every rank takes part in
    gathering an FSDP model's state first."""
    from cloudtune.train.card import write_model_card

    # FSDP: every rank takes part in gathering the full (unsharded) state dict; rank 0 gets it and writes it
    full_state = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    xla_spmd = getattr(trainer, "is_fsdp_xla_v2_enabled", False)
    if xla_spmd:  # XLA FSDPv2: the gathered CPU state under the plain model's names (cloudtune.train.xla)
        from cloudtune.train.xla import spmd_state_dict

        full_state = spmd_state_dict(trainer.model)
    if trainer.args.process_index == 0:
        model_dir = Path(ctx.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        final = trainer.accelerator.unwrap_model(trainer.model)
        if xla is not None:  # saved from the CPU: files that load anywhere
            from cloudtune.train.xla import unwrap_spmd

            final = unwrap_spmd(final)
            if not xla_spmd:
                final = final.to("cpu")
        if xla_spmd and train.lora is None:
            from cloudtune.train.xla import without_tied

            final.save_pretrained(str(model_dir), state_dict=without_tied(final, full_state))
        elif full_state is not None and train.lora is not None:  # the adapter's weights, taken from the full state
            from cloudtune.train.lora import save_classifier_config

            final.peft_config["default"].base_model_name_or_path = base_model
            final.save_pretrained(str(model_dir), state_dict=full_state)
            save_classifier_config(final, model_dir)
        elif full_state is not None:
            # the gathered copies of tied weights (lm_head = wte) are separate tensors: drop the tied names
            tied = set(dict(final.named_parameters(remove_duplicate=False))) - set(dict(final.named_parameters()))
            final.save_pretrained(str(model_dir), state_dict={k: v for k, v in full_state.items() if k not in tied})
        elif train.lora is not None:
            from cloudtune.train.lora import save_lora

            save_lora(final, model_dir, train.lora.merge, base_model)
        else:
            final.save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
        _write_json(model_dir / "metrics.json", metrics)
        try:  # PNG loss and learning-rate plots; never fails the job
            from cloudtune.report.png import write_training_plots

            write_training_plots(model_dir, trainer.state.log_history)
        except Exception as exc:  # noqa: BLE001
            _say(f"warning: plots not written: {exc}")
        write_model_card(model_dir, train, base_model=model_card_base(ctx, train, base_model), data_info=data_info,
                         metrics=metrics, precision=precision)
        _say(f"model, metrics.json and README.md written to {model_dir}")
    trainer.accelerator.wait_for_everyone()


def prepare_lm_data(ctx: RuntimeContext, train: TrainSpec, tokenizer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load, encode (and pack) the train and eval inputs (`cloudtune.train.data`). Returns (train_ds, eval_ds,
    data_info)."""
    from cloudtune.train.data import prepare_lm_data as prepare

    names = [n for n in (train.data.train, train.data.eval) if n is not None and n in ctx.inputs]  # not hf: datasets
    return prepare({n: Path(ctx.inputs[n]) for n in names}, {n: input_source(ctx, n) for n in names}, train, tokenizer)


def run_causal_lm(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune `train.model` on `ctx.inputs[train.data.train]`; write the model and metrics.json to ctx.model_dir.

    Returns the metrics (eval_* / perplexity_* keys only when there is an eval set). A seq-classification spec is
    handed to that recipe (see `cloudtune.train.run_recipe`).
    """
    if train.task != "causal-lm":
        from cloudtune.train import run_recipe

        return run_recipe(ctx, train, checkpoint)
    from transformers import set_seed

    from cloudtune.train.packing import CausalLMCollator

    _quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)

    source = resolve_model_source(ctx, train.model)
    device = device_type()
    with phase("loading model", source):
        tokenizer, model = _load(source, shown=model_shown(ctx, train), max_seq_len=hp.max_seq_len,
                                 base=base_model_source(ctx, train), load_kwargs=model_load_kwargs(train, train.task, device))
    train = lora_output_for(train, model)
    train = memory_settings(train, model, device)
    hp = train.hyperparameters
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    with phase("preparing data", f"input {train.data.train!r} (load, tokenise{', pack' if train.data.packing else ''})"):
        train_ds, eval_ds, info = prepare_lm_data(ctx, train, tokenizer)
    examples = "a stream of training examples" if info["train_examples"] is None else f"{info['train_examples']} training examples"
    _say(f"data: {info['format']} format, {examples}"
         + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set")
         + f" (prepared in {info['prepare_seconds']:.1f} s)")
    if train.lora is not None:
        from cloudtune.train.lora import apply_lora, trainable_summary

        model = apply_lora(prepare_quantized(model, hp.gradient_checkpointing), train.lora, train.task,
                           hp.gradient_checkpointing)
        _say(f"LoRA r={train.lora.r} alpha={train.lora.alpha} on {sorted(model.peft_config['default'].target_modules)}: "
             + trainable_summary(model))
    return run_training(ctx, train, checkpoint, tokenizer=tokenizer, model=model, train_ds=train_ds, eval_ds=eval_ds,
                        collator=CausalLMCollator(tokenizer.pad_token_id, attn, pad_to=fixed_length(hp.max_seq_len)),
                        base_model=train_model_name(train, source, ctx),
                        data_info=info)


def device_type() -> str:
    """Where this process trains: xla (PyTorch/XLA), cuda or cpu."""
    if xla_device_type() is not None:
        return "xla"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def memory_settings(train: TrainSpec, model: Any, device: str) -> TrainSpec:
    """`train` with gradient checkpointing decided (`cloudtune.train.loading.decide_gradient_checkpointing`: null =
    on when the memory estimate says this GPU needs it), said in the log when it was decided for the user."""
    on = decide_gradient_checkpointing(train, model, device)
    if train.hyperparameters.gradient_checkpointing is None and on:
        _say("gradient checkpointing on: the memory estimate without it exceeds this GPU's memory "
             "(set hyperparameters.gradient_checkpointing to choose)")
    dtype = getattr(model, "dtype", None)
    if dtype is not None and str(dtype) != "torch.float32":
        _say(f"model weights loaded in {str(dtype).replace('torch.', '')}"
             + (" (4-bit NF4 base, QLoRA)" if train.lora is not None and train.lora.quantize else ""))
    return with_gradient_checkpointing(train, on)


def fixed_length(max_seq_len: int) -> int | None:
    """The length every batch is padded to: `max_seq_len` on PyTorch/XLA (one compiled graph for every batch), None
    (the batch's longest row) elsewhere."""
    return max_seq_len if xla_device_type() is not None else None


def base_model_source(ctx: RuntimeContext, train: TrainSpec) -> tuple[str, str] | None:
    """(source, shown) of `train.base_model` (an input's local dir, or a hub id as given); None when unset."""
    if train.base_model is None:
        return None
    shown = input_source(ctx, train.base_model) if train.base_model in ctx.inputs else None
    return resolve_model_source(ctx, train.base_model), shown or train.base_model


def lora_output_for(train: TrainSpec, model: Any) -> TrainSpec:
    """A new LoRA adapter trained on a model merged from another adapter adapts weights that exist nowhere else, so
    the model dir gets the merged weights too (as `lora.merge: true`; the new adapter goes to adapter/): the output
    loads on its own. FSDP cannot merge (JobInputError). Other specs are returned as they are."""
    if train.lora is None or train.lora.merge or not getattr(model, "ct_from_adapter", False):
        return train
    if train.distributed == "fsdp":
        raise JobInputError("train.lora on a LoRA adapter model writes merged weights, which distributed: fsdp cannot "
                            "gather in one process: use distributed: ddp, or train all weights (remove train.lora)")
    _say("LoRA on a merged adapter model: the model dir gets the merged weights, the new adapter goes to adapter/")
    return train.model_copy(update={"lora": train.lora.model_copy(update={"merge": True})})


def train_model_name(train: TrainSpec, source: str, ctx: RuntimeContext | None = None) -> str:
    """What adapter_config.json names as the base model: a hub id as given, else the user's own path or URI of
    the model (the spec's source of the input that holds it), else the local path it was loaded from."""
    if source == train.model:
        return train.model
    if ctx is not None and train.model in ctx.inputs:
        return input_source(ctx, train.model) or source
    return source


def model_card_base(ctx: RuntimeContext, train: TrainSpec, source: str) -> str:
    """How the model card names the base model: the model the user named (hub id, path or URI in the spec), never
    a path inside the container; `input 'NAME'` when the job config does not say where that input came from."""
    return model_shown(ctx, train)
