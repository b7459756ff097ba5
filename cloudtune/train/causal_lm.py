"""The built-in causal-LM recipe: fine-tune a Hugging Face model (all weights, or a LoRA adapter) with the Trainer.

Data shapes: plain text, instruction (loss on the completion only) and chat (loss on the assistant turns only);
optional packing with block-diagonal attention (see `cloudtune.train.data`). The training flow (`run_training`)
is shared with the seq-classification recipe.

Reads only the RuntimeContext and the spec. Works in one process or under torchrun (DDP; gloo on CPU);
only rank 0 prints, writes the model and writes metrics. Checkpoints are complete-or-absent (see
`cloudtune.train.checkpoints`); a restart resumes from the newest complete one; SIGTERM saves one and exits 143.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.checkpoints import CheckpointStore

LOG_PREFIX = "[cloudtune]"

STEP_LOG_FORMAT = LOG_PREFIX + " step={step} loss={loss:.4f} learning_rate={learning_rate:.6g} epoch={epoch:.2f}"
"""Printed every `logging_steps` optimizer steps (and on the first), rank 0 only, e.g.
`[cloudtune] step=10 loss=2.3141 learning_rate=0.0004 epoch=0.50`. learning_rate may use exponent notation (4e-05)."""

EVAL_LOG_FORMAT = LOG_PREFIX + " eval {when}: eval_loss={eval_loss:.4f} perplexity={perplexity:.2f}"
"""Printed before (`when`=before) and after (`when`=after) training, rank 0 only, e.g.
`[cloudtune] eval after: eval_loss=2.0100 perplexity=7.46`. perplexity may be `inf` for a huge loss."""

TRAIN_DONE_LOG_FORMAT = (
    LOG_PREFIX + " train done: train_loss={train_loss:.4f} train_runtime_s={train_runtime_s:.2f}"
    " tokens_per_second={tokens_per_second:.1f} global_step={global_step}"
)
"""Printed once training finishes, rank 0 only."""

CLS_EVAL_LOG_FORMAT = LOG_PREFIX + " eval {when}: eval_loss={eval_loss:.4f} accuracy={eval_accuracy:.4f} f1={eval_f1:.4f}"
"""The seq-classification recipe's eval line (`when` = before, after or step<N>); f1 is macro-F1."""

RESUME_LOG_FORMAT = LOG_PREFIX + " resuming from checkpoint {path} (step {step})"
CHECKPOINT_LOG_FORMAT = LOG_PREFIX + " checkpoint saved: {path} (step {step})"
SIGTERM_LOG_FORMAT = LOG_PREFIX + " SIGTERM received: checkpoint saved at step {step}, exiting"

_NUM = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan))"
METRIC_REGEXES: dict[str, str] = {
    "train_loss": r"\[cloudtune\] step=\d+ loss=" + _NUM,
    "learning_rate": r"\[cloudtune\] step=\d+ .*learning_rate=" + _NUM,
    "epoch": r"\[cloudtune\] step=\d+ .*epoch=" + _NUM,
    "eval_loss": r"\[cloudtune\] eval \w+: eval_loss=" + _NUM,
    "perplexity": r"\[cloudtune\] eval \w+: .*perplexity=" + _NUM,
    "eval_accuracy": r"\[cloudtune\] eval \w+: .* accuracy=" + _NUM,
    "eval_f1": r"\[cloudtune\] eval \w+: .* f1=" + _NUM,
    "tokens_per_second": r"\[cloudtune\] train done: .*tokens_per_second=" + _NUM,
}
"""Metric name -> regex with one capture group, matching the log lines above (for cloud metric definitions)."""

EARLY_STOP_LOG_FORMAT = LOG_PREFIX + " early stopping at step {step}: eval_loss did not improve on {best:.4f} for {patience} evaluations"

SIGTERM_EXIT_CODE = 143
LOGGING_STEPS = 10


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _say(line: str) -> None:
    if _rank() == 0:
        print(line if line.startswith(LOG_PREFIX) else f"{LOG_PREFIX} {line}", flush=True)


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def resolve_model_source(ctx: RuntimeContext, model: str) -> str:
    """An input name -> its local dir (one level down if the dir holds exactly one model subdir); else as is."""
    if model not in ctx.inputs:
        return model
    path = Path(ctx.inputs[model])
    if path.is_dir() and not (path / "config.json").is_file():
        candidates = [d for d in sorted(path.iterdir()) if d.is_dir() and (d / "config.json").is_file()]
        if len(candidates) == 1:
            path = candidates[0]
    return str(path)


def _load(source: str, task: str = "causal-lm", num_labels: int | None = None,
          id2label: dict[int, str] | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "right"
    if task == "seq-classification":
        extra: dict[str, Any] = {"num_labels": num_labels}
        if id2label is not None:
            extra |= {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.float32, **extra)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 style models: find the last real token / ignore pads
    return tokenizer, model


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """`auto`: bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPU. fp16 needs a GPU."""
    if requested == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if requested == "fp16" and not cuda:
        raise ValueError("hyperparameters.precision fp16 needs a CUDA GPU (mixed precision with a loss scaler); "
                         "on CPU use fp32 (or bf16), or leave precision: auto")
    if requested == "bf16" and cuda and not bf16_supported:
        raise ValueError("hyperparameters.precision bf16 is not supported by this GPU (pre-Ampere); use fp16 or auto")
    return requested


def device_precision(requested: str) -> str:
    import torch

    cuda = torch.cuda.is_available()
    return resolve_precision(requested, cuda, bool(cuda and torch.cuda.is_bf16_supported()))


def fsdp_layer_classes(model: Any) -> list[str]:
    """The class names FSDP wraps one unit each: the model's repeated decoder (or encoder) layer.

    Taken from the module list of layers (`transformer.h`, `model.layers`, `encoder.layer`, ...: the longest
    `ModuleList` whose entries share one class), else from transformers' `_no_split_modules` where those name
    classes present in the model. A PEFT wrapper is looked through.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    best: list[Any] = []
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best) and len({type(m) for m in module}) == 1:
            best = list(module)
    if best:
        return [type(best[0]).__name__]
    present = {type(m).__name__ for m in base.modules()}
    names = [n for n in (getattr(base, "_no_split_modules", None) or []) if n in present]
    if names:
        return sorted(set(names))
    raise ValueError(f"train.distributed fsdp: cannot tell the decoder layer class of {type(base).__name__} "
                     f"(no list of identical layers, no _no_split_modules); use distributed: ddp")


def fsdp_settings(train: TrainSpec, model: Any, world_size: int) -> dict[str, Any]:
    """TrainingArguments keywords for `train.distributed` (empty for ddp, or fsdp in a single process).

    fsdp: FSDP2 full shard (parameters resharded after the forward), one unit per decoder layer, full state dicts
    (checkpoints hold `model.safetensors` + `pytorch_model_fsdp.bin` + the full optimizer state, written by rank 0,
    and load on any world size). gradient_checkpointing becomes FSDP's own activation checkpointing.
    """
    if train.distributed != "fsdp" or world_size <= 1:
        return {}
    return {
        "fsdp": True,  # transformers 5.24: `fsdp="full_shard auto_wrap"` is the deprecated spelling of this config
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,  # full shard (False would be shard_grad_op)
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": fsdp_layer_classes(model),
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
            "activation_checkpointing": train.hyperparameters.gradient_checkpointing,
        },
    }


def _training_arguments(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec,
                        precision: str | None = None, loss_only: bool = True, model: Any = None) -> Any:
    import torch
    from transformers import TrainingArguments

    hp = train.hyperparameters
    precision = precision or device_precision(hp.precision)
    cuda = torch.cuda.is_available()
    from transformers.utils import is_torch_xla_available

    accelerated = cuda or is_torch_xla_available()  # a TPU VM trains on its XLA device, not the CPU
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_size > 1
    fsdp = fsdp_settings(train, model, world_size) if model is not None else {}
    if train.distributed == "fsdp" and not distributed:
        _say("distributed: fsdp in a single process: nothing to shard, training the whole model in this process")
    return TrainingArguments(
        output_dir=str(ctx.checkpoint_dir),
        num_train_epochs=float(hp.epochs),
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        warmup_steps=min(float(hp.warmup_ratio), 0.999999),  # a float < 1 is a ratio of the total steps
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        data_seed=hp.seed,
        lr_scheduler_type="linear",
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        eval_strategy="steps" if hp.eval_every else "no",
        eval_steps=hp.eval_every,
        save_strategy="steps",
        save_steps=checkpoint.every_steps,
        save_total_limit=None,  # rotation is ours: never touch incomplete/corrupt checkpoints
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # the transformers 5 name of gradient_checkpointing; under FSDP its own activation checkpointing does it
        activation_checkpointing=hp.gradient_checkpointing and not fsdp,
        activation_checkpointing_kwargs={"use_reentrant": False} if hp.gradient_checkpointing and not fsdp else None,
        use_cpu=not accelerated,  # on a CPU-only machine this is also what makes torchrun runs use DDP (gloo)
        remove_unused_columns=False,
        prediction_loss_only=loss_only,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        ddp_backend=None if (cuda or not distributed) else "gloo",
        ddp_find_unused_parameters=False if distributed and not fsdp else None,
        **fsdp,
    )


def _make_trainer_class() -> type:
    from transformers import Trainer
    from transformers.trainer_callback import ExportableState

    class CloudtuneTrainer(Trainer):
        """Trainer whose checkpoints are written under a temp name and published whole, with a manifest."""

        ct_store: CheckpointStore

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            plugin_args = self.args.fsdp_plugin_args
            if plugin_args is None or self.is_fsdp_enabled:
                return
            from accelerate.state import PartialState
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            if state.distributed_type == DistributedType.MULTI_CPU:
                # accelerate 1.15 turns an fsdp plugin into DistributedType.FSDP only for GPU-class devices and
                # silently trains DDP on CPU; torch's FSDP2 itself runs on CPU with gloo, so switch it on here.
                # Both shared states: every AcceleratorState() re-reads distributed_type from the PartialState.
                PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                state.distributed_type = DistributedType.FSDP
                state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
                self.is_fsdp_enabled = True

        def _track_num_input_tokens(self, inputs: Any) -> None:
            if "ct_num_tokens" not in inputs:  # packed rows carry a 4D mask: count their real tokens instead
                return super()._track_num_input_tokens(inputs)
            if self.args.include_num_input_tokens_seen == "no":
                return None
            import torch

            count = torch.as_tensor(inputs["ct_num_tokens"], device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(count).sum().item()
            return None

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            inputs = {k: v for k, v in inputs.items() if not k.startswith("ct_")}
            return super().compute_loss(model, inputs, *args, **kwargs)

        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            if self.is_fsdp_enabled and not self.is_in_train and not self.accelerator._models:
                # FSDP2 can only be prepared together with the optimizer (accelerate raises on a model alone), so
                # the eval before training runs on the still unsharded model that every rank holds whole: mark it
                # prepared for the duration of the evaluation; train() then shards it with its optimizer.
                self.accelerator._models.append(self.model)
                try:
                    return super().evaluate(*args, **kwargs)
                finally:
                    self.accelerator._models.remove(self.model)
            metrics = super().evaluate(*args, **kwargs)
            # evaluate() before train() prepares the bare model and marks it prepared, so train() would never
            # wrap it in DistributedDataParallel and the ranks would not all-reduce their gradients: re-arm it.
            if not self.is_in_train and self.model_wrapped is self.model and getattr(self.model, "_is_accelerate_prepared", False):
                self.model._is_accelerate_prepared = False
                self.accelerator._models = [m for m in self.accelerator._models if m is not self.model]
            return metrics

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            store = self.ct_store
            step = self.state.global_step
            args = self.args
            if args.process_index == 0:
                store.prepare(step)
            self.accelerator.wait_for_everyone()
            tmp = store.temp_dir(step)
            tmp.mkdir(parents=True, exist_ok=True)
            self.store_flos()
            self.save_model(str(tmp), _internal_call=True)
            self._save_optimizer_and_scheduler(str(tmp))
            self._save_scaler(str(tmp))
            self._save_rng_state(str(tmp))
            if args.should_save:
                for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
                    name = cb.__class__.__name__
                    if isinstance(self.state.stateful_callbacks.get(name), list):
                        self.state.stateful_callbacks[name].append(cb.state())
                    else:
                        self.state.stateful_callbacks[name] = cb.state()
                self.state.save_to_json(str(tmp / "trainer_state.json"))
            self.accelerator.wait_for_everyone()
            if args.process_index == 0:
                path = store.commit(tmp, step)
                self.ct_last_saved_step = step
                _say(CHECKPOINT_LOG_FORMAT.format(path=path, step=step))
            self.accelerator.wait_for_everyone()
            self.ct_last_saved_step = step
            if args.process_index != 0 and args.local_process_index == 0 and tmp.exists():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)  # another machine's local copy: rank 0 owns checkpoints

    return CloudtuneTrainer


def _make_callbacks() -> tuple[Any, Any]:
    from transformers import TrainerCallback

    class LogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.tokens_at_begin = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.tokens_at_begin = int(state.num_input_tokens_seen or 0)
            self.in_train = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
            if logs and "loss" in logs and state.is_world_process_zero:
                print(STEP_LOG_FORMAT.format(
                    step=state.global_step, loss=float(logs["loss"]),
                    learning_rate=float(logs.get("learning_rate", 0.0)), epoch=float(logs.get("epoch") or 0.0),
                ), flush=True)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> Any:
            if self.in_train and metrics and "eval_loss" in metrics and state.is_world_process_zero:
                print(eval_line(f"step{state.global_step}", metrics), flush=True)

        in_train = False

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.in_train = False

    class SigtermCallback(TrainerCallback):
        """SIGTERM sets a flag; at the end of the current optimizer step every rank agrees to save and stop."""

        def __init__(self) -> None:
            self.requested = False

        def handler(self, signum: int, frame: Any) -> None:
            self.requested = True

        def agreed(self, device: Any) -> bool:
            import torch
            import torch.distributed as dist

            flag = self.requested
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = bool(t.item())
            self.requested = flag
            return flag

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if self.agreed(args.device):
                control.should_save = True
                control.should_training_stop = True
            return control

    return LogCallback(), SigtermCallback()


def _make_early_stopping(patience: int) -> Any:
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        """Stop when `patience` evaluations during training in a row do not lower the best eval loss.

        The count is rebuilt from the trainer state's log history at train begin, so it survives a resume.
        The model written at the end is the one at the step training stopped.
        """

        def __init__(self) -> None:
            self.active = False
            self.best = float("inf")
            self.bad = 0
            self.stopped_at: int | None = None

        def _see(self, loss: float) -> None:
            if loss < self.best:
                self.best, self.bad = loss, 0
            else:
                self.bad += 1

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.active, self.best, self.bad = True, float("inf"), 0
            for entry in state.log_history:
                if "eval_loss" in entry and int(entry.get("step", 0)) > 0:
                    self._see(float(entry["eval_loss"]))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.active = False

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> Any:
            if not self.active or not metrics or "eval_loss" not in metrics:
                return control
            self._see(float(metrics["eval_loss"]))
            if self.bad >= patience:
                control.should_training_stop = True
                self.stopped_at = int(state.global_step)
                _say(EARLY_STOP_LOG_FORMAT.format(step=state.global_step, best=self.best, patience=patience))
            return control

    return EarlyStopping()


def eval_line(when: str, metrics: dict[str, float]) -> str:
    loss = float(metrics["eval_loss"])
    if "eval_accuracy" in metrics:
        return CLS_EVAL_LOG_FORMAT.format(when=when, eval_loss=loss, eval_accuracy=float(metrics["eval_accuracy"]),
                                          eval_f1=float(metrics.get("eval_f1", 0.0)))
    return EVAL_LOG_FORMAT.format(when=when, eval_loss=loss, perplexity=perplexity(loss))


class _Examples:
    """A map-style dataset of `{"input_ids": [...]}` examples."""

    def __init__(self, examples: list[list[int]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.examples[i]}


def tokenize(texts: list[str], tokenizer: Any, max_seq_len: int) -> _Examples:
    """Tokenise with truncation to `max_seq_len` tokens; each example ends with EOS when the tokenizer has one."""
    eos = tokenizer.eos_token_id
    limit = max_seq_len - 1 if eos is not None else max_seq_len
    encoded = tokenizer(list(texts), truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]
    out = []
    for ids in encoded:
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        if ids:
            out.append(ids[:max_seq_len])
    if not out:
        raise ValueError("no example produced a token after tokenisation")
    return _Examples(out)


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
                 compute_metrics: Any = None) -> dict[str, float]:
    """The shared training flow: Trainer with complete-or-absent checkpoints and resume, SIGTERM handling,
    eval before/after (and every `eval_every` steps), early stopping; rank 0 writes the model (or adapter),
    tokenizer, metrics.json and README.md (model card) to ctx.model_dir."""
    import torch.distributed as dist
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cloudtune.train.card import write_model_card

    hp = train.hyperparameters
    precision = device_precision(hp.precision)
    args = _training_arguments(ctx, train, checkpoint, precision=precision, loss_only=compute_metrics is None, model=model)
    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=_say)
    log_cb, sigterm_cb = _make_callbacks()
    callbacks = [log_cb, sigterm_cb]
    early = _make_early_stopping(hp.early_stopping_patience) if hp.early_stopping_patience else None
    if early is not None:
        callbacks.append(early)
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )
    trainer.ct_store = store
    trainer.ct_last_saved_step = None
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)

    resume = store.latest_complete()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        steps: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(steps, resume.step if resume else None)
        if len(set(steps)) != 1:
            raise RuntimeError(f"ranks disagree on the checkpoint to resume from (steps by rank: {steps}); "
                               f"every machine must see the same checkpoint dir contents")
    if resume is not None:
        _say(RESUME_LOG_FORMAT.format(path=resume.path, step=resume.step))
        trainer.ct_last_saved_step = resume.step

    metrics: dict[str, float] = {}
    if eval_ds is not None:
        _evaluate(trainer, "before", metrics)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, sigterm_cb.handler) if in_main_thread else None
    try:
        output = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        if sigterm_cb.agreed(args.device):
            if trainer.ct_last_saved_step != trainer.state.global_step:
                trainer._save_checkpoint(trainer.model, trial=None)
            _say(SIGTERM_LOG_FORMAT.format(step=trainer.state.global_step))
            raise SystemExit(SIGTERM_EXIT_CODE)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens = int(trainer.state.num_input_tokens_seen or 0) - log_cb.tokens_at_begin
    metrics.update({
        "train_loss": float(output.training_loss),
        "train_runtime_s": runtime,
        "tokens_per_second": tokens / runtime if runtime > 0 else 0.0,
        "global_step": int(trainer.state.global_step),
        "train_examples": int(data_info.get("train_examples", len(train_ds))),
    })
    if early is not None and early.stopped_at is not None:
        metrics["early_stopped_at_step"] = early.stopped_at
    _say(TRAIN_DONE_LOG_FORMAT.format(**metrics))

    if eval_ds is not None:
        _evaluate(trainer, "after", metrics)

    # FSDP: every rank takes part in gathering the full (unsharded) state dict; rank 0 gets it and writes it
    full_state = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.args.process_index == 0:
        model_dir = Path(ctx.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        final = trainer.accelerator.unwrap_model(trainer.model)
        if full_state is not None and train.lora is not None:  # the adapter's weights, taken from the full state
            final.peft_config["default"].base_model_name_or_path = base_model
            final.save_pretrained(str(model_dir), state_dict=full_state)
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
        write_model_card(model_dir, train, base_model=model_card_base(ctx, train, base_model), data_info=data_info,
                         metrics=metrics, precision=precision)
        _say(f"model, metrics.json and README.md written to {model_dir}")
    trainer.accelerator.wait_for_everyone()
    return metrics


def prepare_lm_data(ctx: RuntimeContext, train: TrainSpec, tokenizer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Read, encode (and pack) the train and eval inputs. Returns (train_ds, eval_ds, data_info)."""
    from cloudtune.train.data import encode_records, pack, pad_count, read_records

    data, hp = train.data, train.hyperparameters
    records = read_records(Path(ctx.inputs[data.train]), data.text_field)
    from cloudtune.train.data import detect_format

    fmt = detect_format(records[0][1], data, records[0][0])
    if fmt == "chat":
        if data.chat_template is not None:
            tokenizer.chat_template = data.chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the chat data format needs a chat template, and this model's tokenizer has none: set "
                "train.data.chat_template (a Jinja template rendering `messages`) or use a model whose tokenizer has one"
            )
    train_ds, _, dropped = encode_records(records, data, tokenizer, hp.max_seq_len, fmt)
    info: dict[str, Any] = {"format": fmt, "train_examples": len(train_ds), "train_dropped": dropped,
                            "train_input": data.train, "eval_input": data.eval}
    if dropped:
        _say(f"warning: {dropped} training example(s) dropped: no completion/assistant token left within max_seq_len={hp.max_seq_len}")
    eval_ds = None
    if data.eval is not None:
        eval_records = read_records(Path(ctx.inputs[data.eval]), data.text_field)
        eval_ds, _, eval_dropped = encode_records(eval_records, data, tokenizer, hp.max_seq_len, fmt)
        info["eval_examples"] = len(eval_ds)
        if eval_dropped:
            _say(f"warning: {eval_dropped} eval example(s) dropped: nothing to score within max_seq_len={hp.max_seq_len}")
    if data.packing:
        before, total = pad_count(train_ds.examples, hp.batch_size)
        packed = pack(train_ds.examples, hp.max_seq_len)
        after, packed_total = pad_count(packed.examples, hp.batch_size)
        info.update({"packed_rows": len(packed), "pad_tokens_unpacked": before, "pad_tokens_packed": after,
                     "tokens_unpacked": total, "tokens_packed": packed_total})
        _say(f"packing: {len(train_ds)} examples -> {len(packed)} rows of <= {hp.max_seq_len} tokens; "
             f"pad tokens per epoch {before} -> {after}")
        train_ds = packed
    return train_ds, eval_ds, info


def run_causal_lm(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune `train.model` on `ctx.inputs[train.data.train]`; write the model and metrics.json to ctx.model_dir.

    Returns the metrics (eval_* / perplexity_* keys only when there is an eval set). A seq-classification spec is
    handed to that recipe (see `cloudtune.train.run_recipe`).
    """
    if train.task != "causal-lm":
        from cloudtune.train import run_recipe

        return run_recipe(ctx, train, checkpoint)
    from transformers import set_seed

    from cloudtune.train.data import CausalLMCollator

    _quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)

    source = resolve_model_source(ctx, train.model)
    _say(f"loading model {source}")
    tokenizer, model = _load(source)
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    if train.data.packing and attn not in ("eager", "sdpa"):
        raise ValueError(f"train.data.packing builds a 4D attention mask, which needs eager or sdpa attention; "
                         f"this model uses {attn!r}: remove packing or load the model with sdpa")
    train_ds, eval_ds, info = prepare_lm_data(ctx, train, tokenizer)
    _say(f"data: {info['format']} format, {info['train_examples']} training examples"
         + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set"))
    if train.lora is not None:
        from cloudtune.train.lora import apply_lora, trainable_summary

        model = apply_lora(model, train.lora, train.task, hp.gradient_checkpointing)
        _say(f"LoRA r={train.lora.r} alpha={train.lora.alpha} on {sorted(model.peft_config['default'].target_modules)}: "
             + trainable_summary(model))
    return run_training(ctx, train, checkpoint, tokenizer=tokenizer, model=model, train_ds=train_ds, eval_ds=eval_ds,
                        collator=CausalLMCollator(tokenizer.pad_token_id, attn), base_model=train_model_name(train, source),
                        data_info=info)


def train_model_name(train: TrainSpec, source: str) -> str:
    """What adapter_config.json names as the base model: a hub id as given, else the local path it was loaded from."""
    return train.model if source == train.model else source


def model_card_base(ctx: RuntimeContext, train: TrainSpec, source: str) -> str:
    """How the model card names the base model: the hub id / path as given, or `input 'NAME' (PATH)`."""
    if train.model in ctx.inputs:
        return f"input '{train.model}' ({source})"
    return train.model
