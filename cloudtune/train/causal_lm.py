"""The built-in causal-LM recipe: full fine-tune of a Hugging Face model with the transformers Trainer.

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
    "tokens_per_second": r"\[cloudtune\] train done: .*tokens_per_second=" + _NUM,
}
"""Metric name -> regex with one capture group, matching the log lines above (for cloud metric definitions)."""

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


def _load(source: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _training_arguments(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> Any:
    import torch
    from transformers import TrainingArguments

    hp = train.hyperparameters
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
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
        eval_strategy="no",
        save_strategy="steps",
        save_steps=checkpoint.every_steps,
        save_total_limit=None,  # rotation is ours: never touch incomplete/corrupt checkpoints
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        fp16=False,
        use_cpu=not cuda,  # on a CPU-only machine this is also what makes torchrun runs use DDP (gloo)
        remove_unused_columns=False,
        prediction_loss_only=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        ddp_backend=None if (cuda or not distributed) else "gloo",
        ddp_find_unused_parameters=False if distributed else None,
    )


def _make_trainer_class() -> type:
    from transformers import Trainer
    from transformers.trainer_callback import ExportableState

    class CloudtuneTrainer(Trainer):
        """Trainer whose checkpoints are written under a temp name and published whole, with a manifest."""

        ct_store: CheckpointStore

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

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
            if logs and "loss" in logs and state.is_world_process_zero:
                print(STEP_LOG_FORMAT.format(
                    step=state.global_step, loss=float(logs["loss"]),
                    learning_rate=float(logs.get("learning_rate", 0.0)), epoch=float(logs.get("epoch") or 0.0),
                ), flush=True)

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


def run_causal_lm(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune `train.model` on `ctx.inputs[train.data.train]`; write the model and metrics.json to ctx.model_dir.

    Returns the metrics (eval_* / perplexity_* keys only when there is an eval set).
    """
    import torch.distributed as dist
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging

    from cloudtune.train.data import CausalLMCollator, read_texts

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    hp = train.hyperparameters
    set_seed(hp.seed)

    source = resolve_model_source(ctx, train.model)
    _say(f"loading model {source}")
    tokenizer, model = _load(source)

    train_texts = read_texts(Path(ctx.inputs[train.data.train]), train.data.text_field)
    train_ds = tokenize(train_texts, tokenizer, hp.max_seq_len)
    eval_ds = None
    if train.data.eval is not None:
        eval_texts = read_texts(Path(ctx.inputs[train.data.eval]), train.data.text_field)
        eval_ds = tokenize(eval_texts, tokenizer, hp.max_seq_len)
    _say(f"data: {len(train_ds)} training examples" + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set"))

    args = _training_arguments(ctx, train, checkpoint)
    store = CheckpointStore(Path(ctx.checkpoint_dir), checkpoint.keep, warn=_say)
    log_cb, sigterm_cb = _make_callbacks()
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[log_cb, sigterm_cb],
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
        loss = float(trainer.evaluate()["eval_loss"])
        metrics["eval_loss_before"], metrics["perplexity_before"] = loss, perplexity(loss)
        _say(EVAL_LOG_FORMAT.format(when="before", eval_loss=loss, perplexity=perplexity(loss)))

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
        "train_examples": len(train_ds),
    })
    _say(TRAIN_DONE_LOG_FORMAT.format(**metrics))

    if eval_ds is not None:
        loss = float(trainer.evaluate()["eval_loss"])
        metrics["eval_loss_after"], metrics["perplexity_after"] = loss, perplexity(loss)
        _say(EVAL_LOG_FORMAT.format(when="after", eval_loss=loss, perplexity=perplexity(loss)))

    if trainer.args.process_index == 0:
        model_dir = Path(ctx.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
        _write_json(model_dir / "metrics.json", metrics)
        _say(f"model and metrics.json written to {model_dir}")
    trainer.accelerator.wait_for_everyone()
    return metrics
