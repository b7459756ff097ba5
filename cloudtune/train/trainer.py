"""The Trainer the recipes run: training arguments from the spec, precision, FSDP wrapping, complete-or-absent
checkpoints (through CheckpointStore), SIGTERM handling and early stopping."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train.checkpoints import CheckpointStore, fault_point
from cloudtune.train.knobs import knob_arguments
from cloudtune.train.logfmt import (  # noqa: F401  (STEP_LOG_FORMAT: re-exported)
    CHECKPOINT_LOG_FORMAT,
    EARLY_STOP_LOG_FORMAT,
    LOGGING_STEPS,
    SIGTERM_EXIT_CODE,
    STEP_LOG_FORMAT,
    _say,
    eval_line,
    step_line,
)


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """`auto`: bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPU. fp16 needs a GPU."""
    if requested == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if requested == "fp16" and not cuda:
        raise JobInputError("hyperparameters.precision fp16 needs a CUDA GPU (mixed precision with a loss scaler); "
                         "on CPU use fp32 (or bf16), or leave precision: auto")
    if requested == "bf16" and cuda and not bf16_supported:
        raise JobInputError("hyperparameters.precision bf16 is not supported by this GPU (pre-Ampere); use fp16 or auto")
    return requested


def device_precision(requested: str) -> str:
    """The precision to train in on this process's device (PyTorch/XLA: see cloudtune.train.xla.xla_precision)."""
    from cloudtune.runtime.xla import xla_device_type

    xla = xla_device_type()
    if xla is not None:
        from cloudtune.train.xla import xla_precision

        return xla_precision(requested, xla)
    import torch

    return resolve_precision(requested, torch.cuda.is_available(), cuda_bf16())


def cuda_bf16() -> bool:
    """Whether this process's CUDA GPU trains in bf16, by its compute capability (8.0+, the catalog's rule:
    cloudtune.catalog.precision). Not `torch.cuda.is_bf16_supported()`, which on torch >= 2.3 counts emulation."""
    import torch

    from cloudtune.catalog.precision import BF16_MIN_CAPABILITY

    return bool(torch.cuda.is_available() and tuple(torch.cuda.get_device_capability()) >= BF16_MIN_CAPABILITY)


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
    raise JobInputError(f"train.distributed fsdp: cannot tell the decoder layer class of {type(base).__name__} "
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
            "activation_checkpointing": bool(train.hyperparameters.gradient_checkpointing),  # null: not asked for
        },
    }


def checkpointing_arguments(arguments_class: Any, on: bool) -> dict[str, Any]:
    """TrainingArguments keywords turning activation (gradient) checkpointing on or off. transformers 5.23 added
    `activation_checkpointing` as the new name of `gradient_checkpointing` (read from the wheels' training_args.py);
    the Python 3.10 images' locks hold older releases (5.20 is the last for Python 3.10), so the name used is the one
    `arguments_class` has."""
    name = "activation_checkpointing" if "activation_checkpointing" in arguments_class.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def _training_arguments(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec,
                        precision: str | None = None, loss_only: bool = True, model: Any = None) -> Any:
    import torch
    from transformers import TrainingArguments

    hp = train.hyperparameters
    precision = precision or device_precision(hp.precision)
    cuda = torch.cuda.is_available()
    from transformers.utils import is_torch_xla_available

    from cloudtune.runtime.xla import xla_device_type

    xla = xla_device_type() if is_torch_xla_available() else None
    # a TPU VM trains on its XLA device. Where torch_xla is installed, transformers' import of it sets
    # PJRT_DEVICE=CPU when nothing else was named, so XLA's CPU device is used: USE_TORCH_XLA=0 runs the plain path
    accelerated = cuda or xla is not None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_size > 1
    if xla is not None:  # one process per host; FSDP is XLA's SPMD FSDPv2 (cloudtune.train.xla)
        from cloudtune.train.xla import xla_training_kwargs

        fsdp = xla_training_kwargs(train, model)
    else:
        fsdp = fsdp_settings(train, model, world_size) if model is not None else {}
    if train.distributed == "fsdp" and not distributed and xla is None:
        _say("distributed: fsdp in a single process: nothing to shard, training the whole model in this process")
    targets = report_targets(getattr(train, "report_to", "auto"), os.environ)
    args = TrainingArguments(
        output_dir=str(ctx.checkpoint_dir),
        num_train_epochs=float(hp.epochs),
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        data_seed=hp.seed,
        **knob_arguments(train, cuda),  # optim, lr_scheduler_type, warmup_steps, max_grad_norm, deepspeed
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        eval_strategy="steps" if hp.eval_every else "no",
        eval_steps=hp.eval_every,
        save_strategy="steps",
        save_steps=checkpoint.every_steps,
        save_total_limit=None,  # rotation is ours: never touch incomplete/corrupt checkpoints
        report_to=[t for t in targets if t != "tensorboard"] or "none",  # TensorBoard: our own event writer
        disable_tqdm=True,
        log_level="warning",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # under FSDP its own activation checkpointing does it; null (undecided): off
        **checkpointing_arguments(TrainingArguments, bool(hp.gradient_checkpointing) and not fsdp),
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
    args.ct_tensorboard_dir = str(ctx.log_dir) if "tensorboard" in targets else None  # read by LogCallback
    return args


REPORT_TARGETS = ("tensorboard", "mlflow", "wandb")
_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def report_targets(report_to: Any, environ: Mapping[str, str]) -> list[str]:
    """Where training metrics go besides the log and the status file (`train.report_to`).

    `auto` (the default): TensorBoard event files (always: cloudtune writes them, no package needed) and MLflow
    when a tracking URI is set (`MLFLOW_TRACKING_URI`, as Azure ML sets it) and mlflow is installed. `none`:
    nowhere else. A list: exactly those of tensorboard, mlflow, wandb; mlflow or wandb asked for but not installed
    is a JobInputError with the fix."""
    import importlib.util

    if report_to is None or report_to == "auto":
        mlflow = bool(environ.get("MLFLOW_TRACKING_URI")) and importlib.util.find_spec("mlflow") is not None
        return ["tensorboard"] + (["mlflow"] if mlflow else [])
    if report_to == "none":
        return []
    wanted = [report_to] if isinstance(report_to, str) else [str(t) for t in report_to]
    unknown = [t for t in wanted if t not in REPORT_TARGETS]
    if unknown:
        raise JobInputError(f"train.report_to: unknown {unknown}; use auto, none or a list of {', '.join(REPORT_TARGETS)}")
    for target in wanted:
        package = _PACKAGES.get(target)
        if package and importlib.util.find_spec(package) is None:
            raise JobInputError(f"train.report_to lists {target}, but the {package} package is not installed in the "
                                f"training image; install it in the image the job runs (`pip install {package}`), or drop {target}")
    return list(dict.fromkeys(wanted))


def _make_trainer_class() -> type:
    from transformers import Trainer
    from transformers.trainer_callback import ExportableState

    class CloudtuneTrainer(Trainer):
        """Trainer whose checkpoints are written under their final names and completed by a manifest written last."""

        ct_store: CheckpointStore

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if "mlflow" in (self.args.report_to or []):  # one MLflow run for the whole job (see _mlflow_callback)
                from transformers.integrations import MLflowCallback

                self.remove_callback(MLflowCallback)
                self.add_callback(_mlflow_callback())

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

        ct_train_drop_last = False  # PyTorch/XLA: fixed shapes, the last partial training batch is dropped

        def _get_dataloader(self, *args: Any, **kwargs: Any) -> Any:
            # dataloader_drop_last would drop eval examples too: drop only in training (is_training)
            training = bool(kwargs.get("is_training", args[4] if len(args) > 4 else False))
            before = self.args.dataloader_drop_last
            self.args.dataloader_drop_last = before or (training and self.ct_train_drop_last)
            try:
                return super()._get_dataloader(*args, **kwargs)
            finally:
                self.args.dataloader_drop_last = before

        def _wrap_model(self, model: Any, training: bool = True, dataloader: Any = None) -> Any:
            wrapped = super()._wrap_model(model, training, dataloader)
            if training and getattr(self, "is_fsdp_xla_v2_enabled", False) and self.optimizer is None:
                # transformers 5.24 delays the optimizer under XLA FSDP, then, the model being wrapped already,
                # never creates it (`'NoneType' object has no attribute 'param_groups'`): make it from the
                # wrapped (sharded) parameters, as the delayed path would have.
                self.create_optimizer(wrapped)
            return wrapped

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if not getattr(self, "is_fsdp_xla_v2_enabled", False):
                return super().save_model(output_dir, _internal_call)
            # the Trainer's TPU save writes the FSDPv2 wrapper's `_orig_module.` keys with xm.save and no config:
            # write the plain model's config and safetensors instead (they load with from_pretrained anywhere)
            import torch

            from cloudtune.train.xla import spmd_state_dict, unwrap_spmd, without_tied

            output_dir = output_dir or self.args.output_dir
            state = spmd_state_dict(self.model)
            if self.args.should_save:
                inner = unwrap_spmd(self.model)
                os.makedirs(output_dir, exist_ok=True)
                inner.save_pretrained(output_dir, state_dict=without_tied(inner, state))
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
                torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

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

        ct_train_loss: float | None = None  # the whole training's mean step loss (cloudtune.train.trainloss)

        def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> Any:
            # a checkpoint a run may resume from (not the last step's) logs first, so its log history covers every
            # step up to it and the resumed job's train_loss counts them (cloudtune.train.trainloss)
            if self.control.should_save and self.state.global_step < self.state.max_steps:
                self.control.should_log = True
            return super()._maybe_log_save_evaluate(*args, **kwargs)

        def _finalize_training(self, trial: Any, num_train_samples: Any, start_time: Any) -> Any:
            """The Trainer's summary with `train_loss` over the whole training, the same on every rank and layout
            (the Trainer's own counts this rank's unlogged steps and this run's steps only)."""
            from transformers.trainer_pt_utils import nested_gather

            from cloudtune.train.trainloss import whole_training_loss

            remainder = float(nested_gather(self._tr_loss.detach().reshape(1), self.args.parallel_mode).mean().item())
            self.ct_train_loss = whole_training_loss(self.state.log_history, self._initial_global_step,
                                                     self._total_loss_scalar, remainder, self.state.global_step)
            output = super()._finalize_training(trial, num_train_samples, start_time)
            metrics = dict(output.metrics or {}) | {"train_loss": self.ct_train_loss}
            return type(output)(output.global_step, self.ct_train_loss, metrics)

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "train_loss" in logs and self.ct_train_loss is not None:  # the summary _finalize_training logs
                logs = {**logs, "train_loss": self.ct_train_loss}
            return super().log(logs, *args, **kwargs)

        ct_local_tmp = None  # a non-zero machine's own temp copy of the last save (its RNG files), removed later

        def train(self, *args: Any, **kwargs: Any) -> Any:
            """The Trainer's train(); on return every checkpoint it saved is published (a background commit is
            joined and the ranks meet), so a process that exits next cannot cut a commit short."""
            try:
                output = super().train(*args, **kwargs)
            except BaseException:
                try:
                    self.ct_store.wait()  # publish what was saved before the failure, if it can be
                except Exception as exc:  # the training error is the one to raise
                    _say(f"warning: {exc}")
                raise
            self.ct_store.wait()
            self.accelerator.wait_for_everyone()
            self._ct_drop_local_tmp(None)
            return output

        def _ct_drop_local_tmp(self, keep: Any) -> None:
            """A non-zero machine removes its local copy of an earlier save (its RNG files; rank 0 owns checkpoints)
            unless it is complete (on a shared dir it is rank 0's published checkpoint). Called only after a barrier
            that rank 0 passes with that save's commit finished."""
            old = self.ct_local_tmp
            if old is not None and old != keep:
                import shutil

                if self.ct_store.unfinished(old):
                    shutil.rmtree(old, ignore_errors=True)
                self.ct_local_tmp = None

        def _ct_write_checkpoint(self, tmp: Any) -> None:
            """What the Trainer's own _save_checkpoint writes (model, optimizer, scheduler, scaler, RNG, state)."""
            self.store_flos()
            self.save_model(str(tmp), _internal_call=True)
            fault_point("write", self.state.global_step)
            self._save_optimizer_and_scheduler(str(tmp))
            self._save_scaler(str(tmp))
            self._save_rng_state(str(tmp))
            if self.args.should_save:
                for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
                    name = cb.__class__.__name__
                    if isinstance(self.state.stateful_callbacks.get(name), list):
                        self.state.stateful_callbacks[name].append(cb.state())
                    else:
                        self.state.stateful_callbacks[name] = cb.state()
                self.state.save_to_json(str(tmp / "trainer_state.json"))

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            """Write the files under their final names in the dir rank 0 chose, then rank 0 writes the manifest last
            (CheckpointStore.commit): no directory is renamed, so this holds on bucket mounts (gcsfuse, blobfuse).

            During training (not stopping), the commit (fsync, hashes, manifest, rotation) runs in a background thread
            on rank 0 and every rank trains on; the next save, the end of train() or a stop waits for it. A save that
            stops training (SIGTERM, last step) or comes after train() commits before returning, and every rank waits
            for it, so no rank exits before the checkpoint is complete."""
            from accelerate.utils import broadcast_object_list

            store, step, args = self.ct_store, self.state.global_step, self.args
            began = time.monotonic()
            fault_point("before", step)
            box = [store.prepare(step).name if args.process_index == 0 else None]  # prepare joins the last commit
            broadcast_object_list(box, from_process=0)  # a dir held by a damaged checkpoint moves the name on
            tmp = store.root / str(box[0])
            self.accelerator.wait_for_everyone()
            is_local_leader = args.process_index != 0 and args.local_process_index == 0
            if is_local_leader:
                self._ct_drop_local_tmp(tmp)
                store.open_for_write(tmp)  # this machine's own copy when its checkpoint dir is not shared
            self._ct_write_checkpoint(tmp)
            self.accelerator.wait_for_everyone()
            self.ct_last_saved_step = step
            background = bool(self.is_in_train and not self.control.should_training_stop)
            if args.process_index == 0:
                store.commit(tmp, step, background=background,
                             on_done=lambda path: _say(CHECKPOINT_LOG_FORMAT.format(path=path, step=step)
                                                       + f" in {time.monotonic() - began:.1f}s"))
            if is_local_leader and tmp.exists():
                self.ct_local_tmp = tmp
            if not background:
                self.accelerator.wait_for_everyone()
                if is_local_leader:
                    self._ct_drop_local_tmp(None)

    return CloudtuneTrainer


def _make_callbacks() -> tuple[Any, Any]:
    from transformers import TrainerCallback

    from cloudtune.train.progress import ProgressReport, StepClock

    class LogCallback(TrainerCallback):
        """Rank 0's view of training: the step and eval log lines, the status file in the checkpoint dir
        (cloudtune.train.progress) and the TensorBoard scalars (when `args.ct_tensorboard_dir` is set)."""

        def __init__(self) -> None:
            self.tokens_at_begin = 0
            self.clock = StepClock()
            self.report = ProgressReport()
            self.metrics: Any = None  # the MetricReporter, made on the first report (it reads args.report_to)

        def _metrics(self, args: Any) -> Any:
            if self.metrics is None:
                from cloudtune.train.metricreport import MetricReporter

                self.metrics = MetricReporter(mlflow="mlflow" not in (args.report_to or []))
            return self.metrics

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.tokens_at_begin = int(state.num_input_tokens_seen or 0)
            self.in_train = True
            self.clock.begin(state.global_step, self.tokens_at_begin, state.max_steps)
            if state.is_world_process_zero:
                self.report.open(args.output_dir, getattr(args, "ct_tensorboard_dir", None))
                self.report.update(phase="training", step=int(state.global_step), total_steps=int(state.max_steps),
                                   started_at=self.clock.started_at)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
            if not logs or not state.is_world_process_zero:
                return
            if "loss" in logs:
                self._step(state, logs)
            if "train_loss" in logs:  # the Trainer's summary at the end of train()
                self.report.metric("train_loss", logs["train_loss"])
                self._metrics(args).report({"train_loss": logs["train_loss"]}, int(state.global_step))
                runtime = logs.get("train_runtime")
                self.report.metric("train_runtime_s", runtime)
                tokens = int(state.num_input_tokens_seen or 0) - self.tokens_at_begin
                if isinstance(runtime, (int, float)) and runtime > 0:
                    self.report.metric("tokens_per_second", tokens / runtime)

        def _step(self, state: Any, logs: dict) -> None:
            step, total = int(state.global_step), int(state.max_steps)
            tps, eta = self.clock.reading(step, int(state.num_input_tokens_seen or 0))
            loss, lr, epoch = float(logs["loss"]), float(logs.get("learning_rate", 0.0)), float(logs.get("epoch") or 0.0)
            # preference tuning (TRL): rewards/chosen, rejected, margins, accuracies: on the step line (the report
            # charts every numeric key of it), in the status file's metrics and in TensorBoard
            rewards = {k: float(v) for k, v in logs.items() if k.startswith("rewards/") and isinstance(v, (int, float))}
            print(step_line(step, total, loss, lr, epoch, tps, eta) + "".join(f" {k}={v:.4g}" for k, v in rewards.items()),
                  flush=True)
            self.report.update(step=step, total_steps=total, epoch=epoch, loss=loss, learning_rate=lr,
                               tokens_per_second=tps, eta_s=eta)
            scalars = {"train/loss": loss, "train/learning_rate": lr, "train/epoch": epoch}
            if tps is not None:
                scalars["train/tokens_per_second"] = tps
            if isinstance(logs.get("grad_norm"), (int, float)):
                scalars["train/grad_norm"] = float(logs["grad_norm"])
            for key, value in rewards.items():
                self.report.metric(key, value)
                scalars[f"train/{key}"] = value
            self.report.scalars(step, scalars)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> Any:
            if not metrics or "eval_loss" not in metrics or not state.is_world_process_zero:
                return
            if self.in_train:
                print(eval_line(f"step{state.global_step}", metrics), flush=True)
            if self.report.status_dir is None:  # the evaluation before training
                self.report.open(args.output_dir, getattr(args, "ct_tensorboard_dir", None))
            figures = self.report.evaluated(int(state.global_step), metrics)
            self._metrics(args).report(figures, int(state.global_step))

        in_train = False

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.in_train = False
            if state.is_world_process_zero:
                self.report.metric("global_step", int(state.global_step))
                epoch = float(state.epoch) if isinstance(state.epoch, (int, float)) else None  # the end's, not the last log's
                self.report.update(phase="done", step=int(state.global_step), eta_s=0.0, epoch=epoch)

    class SigtermCallback(TrainerCallback):
        """SIGTERM sets a flag and arms the stop deadline (cloudtune.runtime.stopping: the process exits within it,
        whatever hangs); at the end of the current optimizer step every rank agrees to save and stop.

        The flag is only ever raised, never cleared: a SIGTERM that arrives while the ranks compare flags (or while a
        checkpoint is written) is acted on at the next step end, not lost."""

        def __init__(self) -> None:
            self.requested = False

        def handler(self, signum: int, frame: Any) -> None:
            from cloudtune.runtime.stopping import arm

            self.requested = True
            arm(SIGTERM_EXIT_CODE)

        def agreed(self, device: Any) -> bool:
            import torch
            import torch.distributed as dist

            flag = self.requested
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = bool(t.item())
            if flag and not self.requested:  # another rank was signalled: this one stops too, within the same bound
                from cloudtune.runtime.stopping import arm

                self.requested = True
                arm(SIGTERM_EXIT_CODE)
            return flag

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if self.agreed(args.device):
                control.should_save = True
                control.should_training_stop = True
            return control

    return LogCallback(), SigtermCallback()


def _mlflow_callback() -> Any:
    """transformers' MLflowCallback, except that its run stays open after train() for the evaluation that follows
    (which would otherwise open a second run); the run ends when the process exits."""
    import atexit

    from transformers.integrations import MLflowCallback

    class JobRunMLflow(MLflowCallback):
        def setup(self, args: Any, state: Any, model: Any) -> None:
            super().setup(args, state, model)
            if state.is_world_process_zero and self._auto_end_run:
                atexit.register(self._ml_flow.end_run)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            return None

    return JobRunMLflow()


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
