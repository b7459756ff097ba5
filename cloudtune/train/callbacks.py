"""The callbacks every recipe's Trainer runs with: the log lines, status file and TensorBoard scalars
(`LogCallback`), SIGTERM (`SigtermCallback`), early stopping (`EarlyStopping`) and one MLflow run per job
(`JobRunMLflow`) and the health checks (`HealthCallback`). Imports transformers: only the container imports this module."""

from __future__ import annotations

import atexit
import time
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from transformers.integrations import MLflowCallback

from cloudtune.contracts.logfmt import EARLY_STOP_LOG_FORMAT, SIGTERM_EXIT_CODE, eval_line, say, step_line
from cloudtune.contracts.progress import ProgressReport, StepClock, read_status
from cloudtune.runtime.stopping import arm
from cloudtune.train.knobs import warmup_warning
from cloudtune.train.metricreport import MetricReporter
from cloudtune.train.health import HealthState, on_evaluation, read_step_loss, restore_best


def earlier_training_s(status_dir: Any) -> float | None:
    """The training seconds the attempts before this one spent (`trained_s` in the status file they left in the
    checkpoint dir, cloudtune.contracts.progress); None when that file or figure is missing."""
    value = (read_status(status_dir) or {}).get("trained_s")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


class LogCallback(TrainerCallback):
    """Rank 0's view of training: the step and eval log lines, the status file in the checkpoint dir
    (cloudtune.contracts.progress) and the TensorBoard scalars (when `args.ct_tensorboard_dir` is set)."""

    def __init__(self) -> None:
        self.tokens_at_begin = 0
        self.earlier_s: float | None = 0.0  # training seconds of the attempts before a resume; None: not known
        # what the status file said of them when this process first opened it (before the evaluation before
        # training, whose step is 0 even in a resumed run, rewrites it); earlier_s is this once training begins
        self.found_s: float | None = None
        self.clock = StepClock()
        self.report = ProgressReport()
        self.metrics: MetricReporter | None = None  # made on the first report (it reads args.report_to)

    def _metrics(self, args: Any) -> MetricReporter:
        if self.metrics is None:
            self.metrics = MetricReporter(mlflow="mlflow" not in (args.report_to or []))
        return self.metrics

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.tokens_at_begin = int(state.num_input_tokens_seen or 0)
        self.in_train = True
        self.clock.begin(state.global_step, self.tokens_at_begin, state.max_steps)
        if state.is_world_process_zero:
            warning = warmup_warning(getattr(args, "warmup_steps", 0) or 0, int(state.max_steps))
            if warning and not state.global_step:  # once, at the start (not again at each resume)
                say(warning)
            self._open(args)
            self.earlier_s = self.found_s if state.global_step else 0.0
            self.report.update(phase="training", step=int(state.global_step), total_steps=int(state.max_steps),
                               started_at=self.clock.started_at, trained_s=self._trained_s())

    def _open(self, args: Any) -> None:
        """Start the status file (and TensorBoard), first reading the training seconds that the attempts before this
        one left in it (`found_s`): the evaluation before training writes the file before training begins."""
        if self.report.status_dir is None:
            self.found_s = earlier_training_s(args.output_dir)
        self.report.open(args.output_dir, getattr(args, "ct_tensorboard_dir", None))

    def _trained_s(self) -> float | None:
        """Seconds of training so far over every attempt (None when an earlier attempt's are not known)."""
        return None if self.earlier_s is None else self.earlier_s + time.monotonic() - self.clock.start_time

    def whole_run(self, runtime: float, state: Any) -> tuple[float, float]:
        """(train_runtime_s, inputs per second) of the whole run: this attempt's `runtime` (the Trainer's
        `train_runtime`, s) plus the attempts' before a resume (the status file's `trained_s`, which the
        checkpoint dir keeps across restarts), and every input token (image) the run has seen
        (TrainerState.num_input_tokens_seen, restored with the checkpoint) over that time; a step redone after a
        resume counts in the time, not twice in the inputs. With the earlier attempts' time unknown (a resume from
        checkpoints without the status file): this attempt's runtime and its own inputs."""
        seen = int(state.num_input_tokens_seen or 0)
        if self.earlier_s is None:
            total, inputs = runtime, seen - self.tokens_at_begin
        else:
            total, inputs = runtime + self.earlier_s, seen
        return total, (inputs / total if total > 0 else 0.0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" in logs:
            self._step(state, logs)
        if "train_loss" in logs:  # the Trainer's summary at the end of train()
            self.report.metric("train_loss", logs["train_loss"])
            self._metrics(args).report({"train_loss": logs["train_loss"]}, int(state.global_step))
            runtime = logs.get("train_runtime")
            if isinstance(runtime, (int, float)) and runtime > 0:
                whole, per_second = self.whole_run(float(runtime), state)
                self.report.metric("train_runtime_s", whole)
                self.report.metric("tokens_per_second", per_second)

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
                           tokens_per_second=tps, eta_s=eta, trained_s=self._trained_s())
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
            self._open(args)
        figures = self.report.evaluated(int(state.global_step), metrics)
        self._metrics(args).report(figures, int(state.global_step))

    in_train = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.in_train = False
        if state.is_world_process_zero:
            self.report.metric("global_step", int(state.global_step))
            epoch = float(state.epoch) if isinstance(state.epoch, (int, float)) else None  # the end's, not the last log's
            self.report.update(phase="done", step=int(state.global_step), eta_s=0.0, epoch=epoch,
                               trained_s=self._trained_s())

class SigtermCallback(TrainerCallback):
    """SIGTERM sets a flag and arms the stop deadline (cloudtune.runtime.stopping: the process exits within it,
    whatever hangs); at the end of the current optimizer step every rank agrees to save and stop.

    The flag is only ever raised, never cleared: a SIGTERM that arrives while the ranks compare flags (or while a
    checkpoint is written) is acted on at the next step end, not lost."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        arm(SIGTERM_EXIT_CODE)

    def agreed(self, device: Any) -> bool:
        flag = self.requested
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        if flag and not self.requested:  # another rank was signalled: this one stops too, within the same bound
            self.requested = True
            arm(SIGTERM_EXIT_CODE)
        return flag

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.agreed(args.device):
            control.should_save = True
            control.should_training_stop = True
        return control



class EarlyStopping(TrainerCallback):
    """Stop when `patience` evaluations during training in a row do not lower the best eval loss.

    The count is rebuilt from the trainer state's log history at train begin, so it survives a resume.
    The model written at the end is the one at the step training stopped.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
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
        if self.bad >= self.patience:
            control.should_training_stop = True
            self.stopped_at = int(state.global_step)
            say(EARLY_STOP_LOG_FORMAT.format(step=state.global_step, best=self.best, patience=self.patience))
        return control


class JobRunMLflow(MLflowCallback):
    """transformers' MLflowCallback, except that its run stays open after train() for the evaluation that follows
    (which would otherwise open a second run); the run ends when the process exits."""

    def setup(self, args: Any, state: Any, model: Any) -> None:
        super().setup(args, state, model)
        if state.is_world_process_zero and self._auto_end_run:
            atexit.register(self._ml_flow.end_run)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return None


class HealthCallback(TrainerCallback):
    """Runs the checks of `state` (`cloudtune.train.health`); `attach(trainer)` it once the trainer exists, so the
    trainer hands it each micro-batch's loss (`CloudtuneTrainer.ct_loss_seen`)."""

    def __init__(self, state: HealthState) -> None:
        self.s = state

    def attach(self, trainer: Any) -> None:
        if self.s.spike is not None or self.s.overfit is not None:
            trainer.ct_loss_seen = self.loss_seen

    def loss_seen(self, loss: Any) -> None:
        loss = loss.detach()
        self.s.pending = loss if self.s.pending is None else self.s.pending + loss

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.s.in_train, self.s.pending, self.s.pending_steps = True, None, 0
        if self.s.keep_best:
            restore_best(self.s, state.log_history)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.s.in_train = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        read_step_loss(self.s, int(state.global_step), args.device)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> Any:
        if self.s.in_train and metrics and "eval_loss" in metrics:
            on_evaluation(self.s, int(state.global_step), float(metrics["eval_loss"]), control, kwargs.get("model"))
        return control


class EpochCallback(TrainerCallback):
    """Tells a dataset which epoch it serves (`dataset.epoch`, 0-based): its random choices (an image's flip and
    crop, a caption's or description's dropout) are a function of (seed, epoch, example), not of the global RNG, so
    a resumed run draws what the uninterrupted one drew. On a resume mid-epoch the Trainer's restored `state.epoch`
    (e.g. 1.5) gives that epoch (1)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.dataset.epoch = int((state.epoch or 0.0) + 1e-6)
