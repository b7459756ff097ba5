"""The shared training flow every recipe calls: `run_training` (see `cloudtune.train`'s docstring for the API).

Given a model, its tokenizer or processor, the datasets and a collator, it builds the Trainer (`CloudtuneTrainer`,
or a recipe's subclass) with the arguments from the spec (`cloudtune.train.arguments`) and the callbacks
(`cloudtune.train.callbacks`: log lines, status file, TensorBoard, SIGTERM, early stopping, health), resumes from
the newest complete checkpoint the ranks agree on, evaluates before and after, stops on SIGTERM with a checkpoint
(exit 143) or on divergence (exit 66), and has rank 0 write the outputs (`cloudtune.train.outputs`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudtune.contracts.deepspeed import STAGES as DEEPSPEED_STAGES
from cloudtune.contracts.logfmt import (RESUME_LOG_FORMAT, SIGTERM_EXIT_CODE, SIGTERM_LOG_FORMAT, TRAIN_DONE_LOG_FORMAT,
                                        eval_line, say)
from cloudtune.contracts.logfmt import perplexity as perplexity_of
from cloudtune.errors import JobInputError
from cloudtune.runtime.exitcodes import EXIT_DIVERGED, record_failure
from cloudtune.runtime.stopping import first_to_report
from cloudtune.runtime.types import RuntimeContext
from cloudtune.runtime.xla import xla_device_type
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train import health as ct_health
from cloudtune.train.arguments import device_precision, training_arguments
from cloudtune.train.callbacks import EarlyStopping, HealthCallback, LogCallback, SigtermCallback
from cloudtune.train.checkpoints import CheckpointStore, fault_point
from cloudtune.train.health import last_good_checkpoint, stop_line
from cloudtune.train.loading import decide_gradient_checkpointing, with_gradient_checkpointing
from cloudtune.train.outputs import write_outputs
from cloudtune.train.publish import publish
from cloudtune.train.trainer import CloudtuneTrainer


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


def device_type() -> str:
    """Where this process trains: xla (PyTorch/XLA), cuda or cpu."""
    if xla_device_type() is not None:
        return "xla"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def fixed_length(max_seq_len: int) -> int | None:
    """The length every batch is padded to: `max_seq_len` on PyTorch/XLA (one compiled graph for every batch), None
    (the batch's longest row) elsewhere."""
    return max_seq_len if xla_device_type() is not None else None


def memory_settings(train: TrainSpec, model: Any, device: str) -> TrainSpec:
    """`train` with gradient checkpointing decided (`cloudtune.train.loading.decide_gradient_checkpointing`: null =
    on when the memory estimate says this GPU needs it), said in the log when it was decided for the user."""
    on = decide_gradient_checkpointing(train, model, device)
    if train.hyperparameters.gradient_checkpointing is None and on:
        say("gradient checkpointing on: the memory estimate without it exceeds this GPU's memory "
            "(set hyperparameters.gradient_checkpointing to choose)")
    dtype = getattr(model, "dtype", None)
    if dtype is not None and str(dtype) != "torch.float32":
        say(f"model weights loaded in {str(dtype).replace('torch.', '')}"
            + (" (4-bit NF4 base, QLoRA)" if train.lora is not None and train.lora.quantize else ""))
    return with_gradient_checkpointing(train, on)


def lora_output_for(train: TrainSpec, model: Any) -> TrainSpec:
    """A new LoRA adapter trained on a model merged from another adapter adapts weights that exist nowhere else, so
    the model dir gets the merged weights too (as `lora.merge: true`; the new adapter goes to adapter/): the output
    loads on its own. FSDP cannot merge (JobInputError). Other specs are returned as they are."""
    if train.lora is None or train.lora.merge or not getattr(model, "ct_from_adapter", False):
        return train
    if train.distributed == "fsdp":
        raise JobInputError("train.lora on a LoRA adapter model writes merged weights, which distributed: fsdp cannot "
                            "gather in one process: use distributed: ddp, or train all weights (remove train.lora)")
    say("LoRA on a merged adapter model: the model dir gets the merged weights, the new adapter goes to adapter/")
    return train.model_copy(update={"lora": train.lora.model_copy(update={"merge": True})})


NO_EVAL_BEFORE_DEEPSPEED = ("eval before training: skipped under DeepSpeed (before train() builds its engine, "
                            "transformers refuses to evaluate at ZeRO-2, and at ZeRO-3 builds an inference engine that "
                            "train() then cannot step); evaluations during and after training run as usual")


def run_training(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec, *, model: Any,
                 processing_class: Any, train_ds: Any, eval_ds: Any, collator: Any, base_model: str,
                 data_info: dict[str, Any], compute_metrics: Callable[[Any], dict[str, float]] | None = None,
                 trainer_class: type[CloudtuneTrainer] = CloudtuneTrainer,
                 save_model: Callable[[Any, Path], None] | None = None, perplexity: bool = True,
                 trainer_base: type | None = None, make_arguments: Callable[[Any], Any] | None = None,
                 trainer_kwargs: dict[str, Any] | None = None, callbacks: list[Any] | tuple[Any, ...] = ()
                 ) -> dict[str, float]:
    """The shared training flow (the API is described in `cloudtune.train`'s docstring): the Trainer with
    complete-or-absent checkpoints and resume, SIGTERM handling, eval before/after (and every `eval_every` steps),
    early stopping, the health checks (`cloudtune.train.health`: a diverged run exits 66 with one line and writes no
    model; keep_best writes the best evaluation's weights); rank 0 writes the model (or adapter), the processing
    class, metrics.json, the plots and README.md (model card) to ctx.model_dir, then publishes it when
    `train.push_to_hub` says so (`cloudtune.train.publish`). Returns the metrics.

    A recipe on another Trainer subclass (TRL's preference trainers) passes it as `trainer_base` (`trainer_class` is
    combined with it: cloudtune's checkpointing, TRL's loss), `make_arguments(args)` turning the TrainingArguments
    into that trainer's config, its own constructor keywords (`trainer_kwargs`) and `callbacks` (one with an
    `attach(trainer)` method gets the trainer once it exists)."""
    hp = train.hyperparameters
    precision = device_precision(hp.precision)
    args = training_arguments(ctx, train, checkpoint, precision=precision, loss_only=compute_metrics is None, model=model)
    if make_arguments is not None:
        args = make_arguments(args)
    if not hasattr(train_ds, "__len__"):  # a stream: each process reads its own batches (accelerate's
        args.accelerator_config.dispatch_batches = False  # IterableDatasetShard), as flattened batches cannot be concatenated
    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=say)
    xla = xla_device_type()
    health = ct_health.health_state(train, store, eval_ds, getattr(processing_class, "pad_token_id", None),
                                    xla is not None)
    if trainer_base is not None:  # MRO: cloudtune's overrides, then the base's (e.g. TRL's loss), then Trainer's
        trainer_class = type(f"Cloudtune{trainer_base.__name__}", (trainer_class, trainer_base), {})
    trainer, (log_cb, sigterm_cb, early) = build_trainer(train, args, store, health, trainer_class, model=model,
                                                         processing_class=processing_class, train_ds=train_ds,
                                                         eval_ds=eval_ds, collator=collator,
                                                         compute_metrics=compute_metrics,
                                                         trainer_kwargs=trainer_kwargs, extra_callbacks=callbacks)
    if xla is not None:
        say(f"PyTorch/XLA on {xla}: precision {precision}, batches padded to max_seq_len={hp.max_seq_len}"
            + (", FSDPv2 (SPMD) over the host's devices" if getattr(trainer, "is_fsdp_xla_v2_enabled", False) else ""))

    resume = agreed_resume(store)
    if resume is not None:
        say(RESUME_LOG_FORMAT.format(path=resume.path, step=resume.step))
        trainer.ct_last_saved_step = resume.step

    metrics: dict[str, float] = {}
    if health.probe is not None:
        health.probe.check(trainer.model, "base")  # the base model's outputs, once, before training
    if eval_ds is not None and train.distributed in DEEPSPEED_STAGES:
        say(NO_EVAL_BEFORE_DEEPSPEED)
    elif eval_ds is not None:
        evaluate(trainer, "before", metrics, perplexity)

    output = train_or_stop(ctx, train, trainer, sigterm_cb, resume, precision)
    metrics.update(train_metrics(trainer, output, log_cb, data_info, train_ds, early))
    say(TRAIN_DONE_LOG_FORMAT.format(**metrics))

    metrics.update(ct_health.load_best(trainer, health))
    if eval_ds is not None:
        evaluate(trainer, "after", metrics, perplexity)
    if health.probe is not None:
        warning = health.probe.check(trainer.model, "the end of training")
        if warning:
            say(ct_health.HEALTH_PREFIX + warning)

    write_outputs(ctx, train, trainer, base_model, data_info, metrics, precision, xla, save_model)
    if train.push_to_hub is not None and trainer.args.process_index == 0:
        publish(Path(ctx.model_dir), train.push_to_hub)
    return metrics


def train_or_stop(ctx: RuntimeContext, train: TrainSpec, trainer: CloudtuneTrainer, sigterm_cb: SigtermCallback,
                  resume: Any, precision: str) -> Any:
    """`trainer.train()` (from `resume`, a complete checkpoint, or from the start) with SIGTERM handled: after a
    SIGTERM every rank saves (if the last step is not saved yet) and exits 143; a diverged run exits 66
    (`stop_diverged`). Returns the Trainer's TrainOutput."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, sigterm_cb.handler) if in_main_thread else None
    try:
        try:
            output = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        except ct_health.TrainingDiverged as exc:
            stop_diverged(ctx, train, trainer.ct_store, exc, precision)
        if sigterm_cb.agreed(trainer.args.device):
            if trainer.ct_last_saved_step != trainer.state.global_step:
                trainer._save_checkpoint(trainer.model, trial=None)
            say(SIGTERM_LOG_FORMAT.format(step=trainer.state.global_step))
            fault_point("exit", trainer.state.global_step)
            raise SystemExit(SIGTERM_EXIT_CODE)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return output


def build_trainer(train: TrainSpec, args: Any, store: CheckpointStore, health: ct_health.HealthState,
                  trainer_class: type[CloudtuneTrainer] = CloudtuneTrainer, *, model: Any, processing_class: Any,
                  train_ds: Any, eval_ds: Any, collator: Any, compute_metrics: Any,
                  trainer_kwargs: dict[str, Any] | None = None, extra_callbacks: list[Any] | tuple[Any, ...] = ()
                  ) -> tuple[CloudtuneTrainer, tuple[LogCallback, SigtermCallback, EarlyStopping | None]]:
    """The Trainer (`trainer_class`) with its callbacks: log, SIGTERM, early stopping (or None), health and
    `extra_callbacks`. Returns (trainer, (log callback, SIGTERM callback, early stopping))."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    hp = train.hyperparameters
    log_cb, sigterm_cb = LogCallback(), SigtermCallback()
    early = EarlyStopping(hp.early_stopping_patience) if hp.early_stopping_patience else None
    health_cb = HealthCallback(health)
    callbacks = [log_cb, sigterm_cb] + ([early] if early is not None else []) + [health_cb] + list(extra_callbacks)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=processing_class,
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


def agreed_resume(store: CheckpointStore) -> Any:
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


def evaluate(trainer: Any, when: str, metrics: dict[str, float], perplexity: bool = True) -> None:
    """Evaluate; record eval_loss/eval_accuracy/eval_f1 (+ perplexity, when asked and there is no accuracy) as
    `<key>_<when>`."""
    result = trainer.evaluate()
    for key in ("eval_loss", "eval_accuracy", "eval_f1"):
        if key in result:
            metrics[f"{key}_{when}"] = float(result[key])
    if perplexity and "eval_accuracy" not in result:
        metrics[f"perplexity_{when}"] = perplexity_of(float(result["eval_loss"]))
    say(eval_line(when, result))


def train_metrics(trainer: Any, output: Any, log_cb: LogCallback, data_info: dict[str, Any], train_ds: Any,
                   early: Any) -> dict[str, float]:
    """train_loss (this attempt's mean, as the Trainer gives it), train_runtime_s and tokens_per_second (the whole
    run's, every attempt: `LogCallback.whole_run`), global_step (+ train_examples, early_stopped_at_step)."""
    runtime, per_second = log_cb.whole_run(float(output.metrics.get("train_runtime", 0.0)), trainer.state)
    metrics: dict[str, float] = {
        "train_loss": float(output.training_loss),
        "train_runtime_s": runtime,
        "tokens_per_second": per_second,
        "global_step": int(trainer.state.global_step),
    }
    if data_info.get("train_examples", 0) is not None:
        metrics["train_examples"] = int(data_info.get("train_examples") or len(train_ds))
    if early is not None and early.stopped_at is not None:
        metrics["early_stopped_at_step"] = early.stopped_at
    return metrics


def stop_diverged(ctx: RuntimeContext, train: TrainSpec, store: CheckpointStore, exc: Any, precision: str) -> None:
    """A diverged run (`cloudtune.train.health.TrainingDiverged`, raised on every rank alike): the first rank
    here (`first_to_report`) prints the one stop line and records it as the failure reason; every rank exits 66 (class diverged, never retried), writing
    no model."""
    if first_to_report("diverged"):  # the first rank to get here, whichever it is (torchrun stops the others)
        line = stop_line(exc, last_good_checkpoint(store, exc.step), train, precision)
        print(line, flush=True)
        record_failure(ctx.failure_file, "AlgorithmError: " + line.split("error: ", 1)[1], EXIT_DIVERGED)
    raise SystemExit(EXIT_DIVERGED) from None
