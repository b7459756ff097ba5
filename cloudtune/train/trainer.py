"""The Trainer every recipe runs (`CloudtuneTrainer`, a `transformers.Trainer`): checkpoints written under their final
names and completed by a manifest written last (`cloudtune.train.checkpoints.CheckpointStore`), the whole training's
`train_loss` on every rank and layout, FSDP2 on CPU, token counts of packed rows, PyTorch/XLA's dropped last batch.

A recipe with its own loss (diffusion, preference pairs) subclasses it and overrides `compute_loss`, as TRL's trainers
subclass `transformers.Trainer`. Imports transformers: only the container imports this module.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, broadcast_object_list
from transformers import Trainer
from transformers.integrations import MLflowCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import nested_gather

from cloudtune.contracts.logfmt import CHECKPOINT_LOG_FORMAT, say
from cloudtune.train.callbacks import JobRunMLflow
from cloudtune.train.checkpoints import CheckpointStore, fault_point
from cloudtune.train.trainloss import whole_training_loss
from cloudtune.train.xla import spmd_state_dict, unwrap_spmd, without_tied


class CloudtuneTrainer(Trainer):
    """Trainer whose checkpoints are written under their final names and completed by a manifest written last."""

    ct_store: CheckpointStore
    ct_last_saved_step: int | None = None
    ct_loss_seen: Callable[[Any], None] | None = None  # each micro-batch's loss goes here when set (HealthCallback)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(*args, **kwargs)
        if self.ct_loss_seen is not None:
            self.ct_loss_seen(loss)
        return loss

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "mlflow" in (self.args.report_to or []):  # one MLflow run for the whole job (see JobRunMLflow)
            self.remove_callback(MLflowCallback)
            self.add_callback(JobRunMLflow())

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        plugin_args = self.args.fsdp_plugin_args
        if plugin_args is None or self.is_fsdp_enabled:
            return
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
                say(f"warning: {exc}")
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
                         on_done=lambda path: say(CHECKPOINT_LOG_FORMAT.format(path=path, step=step)
                                                  + f" in {time.monotonic() - began:.1f}s"))
        if is_local_leader and tmp.exists():
            self.ct_local_tmp = tmp
        if not background:
            self.accelerator.wait_for_everyone()
            if is_local_leader:
                self._ct_drop_local_tmp(None)
