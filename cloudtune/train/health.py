"""Training health checks: divergence (stops the run), overfitting and collapse (warnings), and keep-best.

Each check is on by default and switched in `train.health` (`cloudtune.spec.HealthSpec`, whose descriptions give the
defaults). The lines they print are read by `cloudtune.kit.triage`:

* `[cloudtune] error: training diverged at step N: ...` (one line, rank 0), then exit 66: the exit class
  `diverged` (`cloudtune.runtime.exitcodes`), which `retries` never re-runs and whose model dir stays empty.
* `[cloudtune] health: ...` warnings (overfitting, collapse); they never mention divergence.

Divergence. The loss each `training_step` returns (the per-micro-batch loss the Trainer adds to its logged loss,
summed over the step's micro-batches and averaged over the ranks, as the logged loss is) is checked at every optimizer
step, by the Trainer (`CloudtuneTrainer.ct_loss_seen`) and a callback (`cloudtune.train.callbacks.HealthCallback`): `state.log_history` holds only the logged steps, and the
Trainer's `logging_nan_inf_filter` (on by default) replaces a NaN step's loss by the running average, so the log
alone never shows it. The check reads one number per step (`.item()`); cloudtune's Trainer already syncs the device
once per micro-batch to count tokens, so this adds no stall. On PyTorch/XLA, where a read forces the graph to run,
the steps' losses are summed on the device and read every LOGGING_STEPS steps (NaN survives the sum). A step is
diverged when its loss is not finite, or when it spikes: in the first 10 steps, above `spike_factor` x the highest
loss so far; after that, above both `spike_factor` x the median of the
last `spike_window` steps and that median + `spike_mads` x their median absolute deviation (MAD): the factor keeps
a quiet run (tiny MAD) from stopping on noise, the MAD keeps a noisy one from stopping on a batch of odd text.

Overfitting (needs `eval_every`). At each evaluation during training the eval loss and the mean train loss of the
steps since the previous evaluation are recorded. The warning comes once per best evaluation when the eval loss has
been above its best for `patience` evaluations in a row while the train loss fell (the latest train mean is below
the one at the best evaluation).

Collapse (causal-lm). Before training, and at every evaluation (during training and after it), the model generates
greedily from the prompts of the first `prompts` eval examples (the unlabelled prefix of an instruction or chat
example; the first half, at most 32 tokens, of a text example), left-padded to one length, exactly
`max_new_tokens` new tokens (EOS suppressed until then): fixed shapes, and every rank generates the same number of
tokens, so FSDP (whose forward is collective) runs it on every rank. Measured on the new tokens: repetition, the
share of 3-grams of an output that repeat an earlier 3-gram of it (seq-rep-3, Welleck et al. 2019, averaged over
outputs), and distinct-2, the unique 2-grams over all 2-grams of all outputs (Li et al. 2016). Collapsed: repetition
>= `max_repetition`, and either >= the base model's + 0.2 or distinct-2 < half the base's (when the base's is at least
0.2). Off by default on PyTorch/XLA.

Keep-best (`train.keep_best`). An evaluation that lowers the best eval loss asks the Trainer to save a checkpoint at
that step, and the CheckpointStore `protect`s it from rotation; at the end its weights are loaded (the Trainer's own
`_load_best_model`: full weights, LoRA adapter or FSDP) before the model is evaluated and written.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune.runtime.exitcodes import ExitClass
from cloudtune.spec import HealthSpec, TrainSpec
from cloudtune.contracts.logfmt import LOG_PREFIX, LOGGING_STEPS, say
from cloudtune.train.checkpoints import CHECKPOINT_RE, list_checkpoints

HEALTH_PREFIX = LOG_PREFIX + " health: "
DIVERGED_PREFIX = LOG_PREFIX + " error: training diverged"
MIN_SPIKE_HISTORY = 10
"""Steps in the window before the median/MAD spike rule applies; before that, a spike is a loss above spike_factor x
the highest loss seen so far (a NaN or inf is caught from the first step)."""
REPETITION_MARGIN = 0.2
"""How far above the base model's repetition the outputs must be to count as collapsed."""
DISTINCT_RATIO = 0.5
"""Collapsed when distinct-2 falls below this share of the base model's (with repetition >= max_repetition)..."""
MIN_BASE_DISTINCT = 0.2
"""... and only when the base model's distinct-2 is at least this: a base that already says the same thing whatever
the prompt has no diversity to lose, and its tiny figure would make noise look like a collapse."""
PROMPT_TOKENS = 32
"""At most this many tokens of each prompt are kept (the last ones)."""


class TrainingDiverged(Exception):
    """Raised on every rank at the step whose loss diverged; `cloudtune.train.causal_lm.run_training` turns it into
    the one stop line and exit 66."""

    exit_class = ExitClass.DIVERGED.value

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


# ----- divergence ---------------------------------------------------------------------------------------------------

class SpikeDetector:
    """Why a step's loss is diverged (None when it is not), from the recent steps' losses (see the module doc)."""

    def __init__(self, window: int = 50, factor: float = 3.0, mads: float = 10.0) -> None:
        self.recent: deque[float] = deque(maxlen=window)
        self.factor, self.mads = factor, mads

    def see(self, loss: float) -> str | None:
        """Judge `loss`; a loss that is not diverged joins the window."""
        if not math.isfinite(loss):
            return f"the loss is {loss} (not a finite number)"
        if 0 < len(self.recent) < MIN_SPIKE_HISTORY and loss > self.factor * max(self.recent) > 0:
            return (f"the loss {loss:.4g} jumped above {self.factor:g} x the highest of the first steps "
                    f"({max(self.recent):.4g})")
        if len(self.recent) >= MIN_SPIKE_HISTORY:
            median = statistics.median(self.recent)
            mad = statistics.median(abs(x - median) for x in self.recent)
            limit = max(self.factor * median, median + self.mads * mad)
            if median > 0 and loss > limit:
                return (f"the loss {loss:.4g} is far above its recent range (median {median:.4g} of the last "
                        f"{len(self.recent)} steps, limit {limit:.4g})")
        self.recent.append(loss)
        return None


def _world_mean(value: Any, device: Any) -> float:
    """The mean of a per-rank scalar tensor over the ranks (every rank gets the same float)."""
    import torch
    import torch.distributed as dist

    tensor = torch.as_tensor(value, dtype=torch.float32, device=device).detach().reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor = tensor / dist.get_world_size()
    return float(tensor.item())


def stop_line(exc: TrainingDiverged, last_good: Path | None, train: TrainSpec, precision: str) -> str:
    """The one line that ends a diverged run: step, cause, last good checkpoint, what to try."""
    hp = train.hyperparameters
    tries = [f"a lower learning_rate (now {hp.learning_rate:g}; e.g. {hp.learning_rate / 10:g})"]
    if hp.warmup_ratio == 0:
        tries.append("warmup (hyperparameters.warmup_ratio: 0.05)")
    if precision == "fp16":
        tries.append("precision: bf16 instead of fp16")
    where = f"{last_good} (step {_step_of(last_good)})" if last_good is not None else "none (no checkpoint before it)"
    return (f"{DIVERGED_PREFIX} at step {exc.step}: {exc.reason}; last good checkpoint: {where}; "
            f"try {', '.join(tries[:-1]) + ' or ' + tries[-1] if len(tries) > 1 else tries[0]}")


def _step_of(path: Path) -> int:
    match = CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else -1


def last_good_checkpoint(store: Any, diverged_step: int) -> Path | None:
    """The newest complete checkpoint (manifest and sizes checked) whose weights still gave a sound loss: saved at a
    step before `diverged_step - 1` (the weights of step s produce the loss of step s + 1)."""
    for ckpt in reversed(list_checkpoints(store.root)):
        if ckpt.step < diverged_step - 1 and store.problem(ckpt, full=False) is None:
            return ckpt.path
    return None


# ----- overfitting --------------------------------------------------------------------------------------------------

@dataclass
class OverfitTracker:
    """Eval loss above its best for `patience` evaluations in a row while the train loss fell (see the module doc)."""

    patience: int = 3
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, eval loss, train loss)
    warned_for: int | None = None

    def see(self, step: int, eval_loss: float, train_loss: float) -> str | None:
        """Record one evaluation; the warning text when the trend is there (once per best evaluation)."""
        self.history.append((step, eval_loss, train_loss))
        best = min(range(len(self.history)), key=lambda i: self.history[i][1])
        since = self.history[best + 1:]
        b_step, b_eval, b_train = self.history[best]
        if len(since) < self.patience or self.warned_for == b_step or not train_loss < b_train:
            return None
        if not all(e > b_eval for _, e, _ in since[-self.patience:]):
            return None
        self.warned_for = b_step
        return (f"overfitting: eval_loss {eval_loss:.4f} has stayed above its best {b_eval:.4f} (step {b_step}) for "
                f"{len(since)} evaluations while the train loss fell from {b_train:.4f} to {train_loss:.4f}; "
                f"train.keep_best: true writes the best step's weights, hyperparameters.early_stopping_patience stops "
                f"the run, more data or fewer epochs avoid it")


# ----- collapse -----------------------------------------------------------------------------------------------------

def ngram_stats(outputs: list[list[int]], rep_n: int = 3, distinct_n: int = 2) -> tuple[float, float]:
    """(repetition, distinct) of token sequences: the mean share of each output's `rep_n`-grams that repeat an
    earlier one of that output, and unique `distinct_n`-grams over all `distinct_n`-grams of all outputs."""
    reps = []
    for seq in outputs:
        grams = [tuple(seq[i:i + rep_n]) for i in range(len(seq) - rep_n + 1)]
        if grams:
            reps.append(1.0 - len(set(grams)) / len(grams))
    pairs = [tuple(seq[i:i + distinct_n]) for seq in outputs for i in range(len(seq) - distinct_n + 1)]
    return (sum(reps) / len(reps) if reps else 0.0), (len(set(pairs)) / len(pairs) if pairs else 1.0)


def collapse_prompts(eval_ds: Any, count: int) -> list[list[int]]:
    """The prompts of the first `count` eval rows: the unlabelled prefix (labels -100), else the first half of the
    row; at most PROMPT_TOKENS tokens (the last ones), never empty."""
    prompts = []
    for i in range(min(count, len(eval_ds))):
        row = eval_ds[i]
        ids, labels = list(row["input_ids"]), list(row.get("labels") or [])
        cut = next((j for j, lab in enumerate(labels) if lab != -100), 0) if labels else 0
        if cut == 0:
            cut = max(1, len(ids) // 2)
        prompt = ids[:cut][-PROMPT_TOKENS:]
        if prompt:
            prompts.append(prompt)
    return prompts


def collapse_on(spec: HealthSpec, task: str, xla: bool) -> bool:
    """Whether the collapse check runs: causal-lm only; null = on except on PyTorch/XLA."""
    if task != "causal-lm":
        return False
    return (not xla) if spec.collapse is None else spec.collapse


def generate(model: Any, prompts: list[list[int]], pad_id: int, max_new_tokens: int, synced: bool) -> list[list[int]]:
    """Greedy outputs (new tokens only) of `model` for left-padded `prompts`, exactly `max_new_tokens` each."""
    import torch
    from transformers import GenerationConfig

    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                              num_beams=1, pad_token_id=pad_id)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, synced_gpus=synced)
    finally:
        model.train(was_training)
    return [row[width:].tolist() for row in out]


@dataclass
class CollapseProbe:
    """Generates from fixed prompts and compares the outputs' repetition and distinct-2 with the base model's."""

    prompts: list[list[int]]
    pad_id: int
    max_new_tokens: int = 32
    max_repetition: float = 0.5
    base: tuple[float, float] | None = None
    warned: bool = False

    def measure(self, model: Any) -> tuple[float, float]:
        """(repetition, distinct-2) of `model`'s outputs; collective under FSDP (every rank calls it)."""
        import torch.distributed as dist

        synced = bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        return ngram_stats(generate(model, self.prompts, self.pad_id, self.max_new_tokens, synced))

    def check(self, model: Any, when: str) -> str | None:
        """Measure (the first call measures the base); the warning text the first time the outputs collapse."""
        rep, distinct = self.measure(model)
        if self.base is None:
            self.base = (rep, distinct)
            return None
        base_rep, base_distinct = self.base
        lost = distinct < DISTINCT_RATIO * base_distinct and base_distinct >= MIN_BASE_DISTINCT
        if self.warned or rep < self.max_repetition or not (rep >= base_rep + REPETITION_MARGIN or lost):
            return None
        self.warned = True
        return (f"collapse at {when}: generated text repeats itself (repeated 3-grams {rep:.2f}, base model "
                f"{base_rep:.2f}; distinct-2 {distinct:.2f}, base model {base_distinct:.2f}, over {len(self.prompts)} "
                f"eval prompts x {self.max_new_tokens} tokens); try a lower learning_rate, fewer epochs or more "
                f"varied data")


# ----- the callback -------------------------------------------------------------------------------------------------

@dataclass
class HealthState:
    """What the callback carries between steps and evaluations."""

    spike: SpikeDetector | None
    overfit: OverfitTracker | None
    probe: CollapseProbe | None
    keep_best: bool
    store: Any
    every: int = 1
    pending: Any = None  # the device sum of micro-batch losses since the last read
    pending_steps: int = 0
    train_sum: float = 0.0
    train_steps: int = 0
    best: tuple[int, float] | None = None  # (step, eval loss) of the best evaluation during training
    in_train: bool = False


def health_state(train: TrainSpec, store: Any, eval_ds: Any, pad_id: int | None, xla: bool) -> HealthState:
    """The checks `train.health` and `train.keep_best` switch on, set up for this run."""
    spec = train.health
    spike = SpikeDetector(spec.spike_window, spec.spike_factor, spec.spike_mads) if spec.divergence else None
    evals = eval_ds is not None and train.hyperparameters.eval_every is not None
    overfit = OverfitTracker(spec.patience) if spec.overfitting and evals else None
    probe = None
    if eval_ds is not None and pad_id is not None and collapse_on(spec, train.task, xla) and hasattr(eval_ds, "__len__"):
        prompts = collapse_prompts(eval_ds, spec.prompts)
        if prompts:
            probe = CollapseProbe(prompts, pad_id, spec.max_new_tokens, spec.max_repetition)
    return HealthState(spike, overfit, probe, train.keep_best, store, every=LOGGING_STEPS if xla else 1)


def read_step_loss(s: HealthState, step: int, device: Any) -> None:
    """At a step's end: every `s.every` steps read the mean step loss (over steps and ranks); raise
    TrainingDiverged (on every rank alike) when it diverged."""
    if s.pending is None:
        return
    s.pending_steps += 1
    if s.pending_steps < s.every:
        return
    loss = _world_mean(s.pending, device) / s.pending_steps
    steps, s.pending, s.pending_steps = s.pending_steps, None, 0
    if s.spike is not None:
        reason = s.spike.see(loss)
        if reason is not None:
            raise TrainingDiverged(step, reason)
    if math.isfinite(loss):
        s.train_sum += loss * steps
        s.train_steps += steps


def on_evaluation(s: HealthState, step: int, eval_loss: float, control: Any, model: Any) -> None:
    """An evaluation during training: overfitting trend, keep-best save and protection, collapse probe."""
    if s.overfit is not None and s.train_steps:
        warning = s.overfit.see(step, eval_loss, s.train_sum / s.train_steps)
        if warning:
            say(HEALTH_PREFIX + warning)
    s.train_sum, s.train_steps = 0.0, 0
    if s.keep_best and math.isfinite(eval_loss) and (s.best is None or eval_loss < s.best[1]):
        s.best = (step, eval_loss)
        s.store.protect(step)
        control.should_save = True  # the Trainer saves right after the evaluation, at this step
    if s.probe is not None and model is not None:
        warning = s.probe.check(model, f"step {step}")
        if warning:
            say(HEALTH_PREFIX + warning)


def restore_best(s: HealthState, log_history: list[dict[str, Any]]) -> None:
    """On resume: the best evaluation during training from the trainer state's history, protected again when its
    checkpoint is on disk."""
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and int(e.get("step", 0)) > 0]
    evals = [e for e in evals if math.isfinite(e[1]) and best_checkpoint(s.store, e[0]) is not None]
    if evals:
        s.best = min(evals, key=lambda e: e[1])
        s.store.protect(s.best[0])


def best_checkpoint(store: Any, step: int) -> Path | None:
    """The complete checkpoint (manifest and sizes checked) of `step`, if there is one."""
    found = [c for c in list_checkpoints(store.root) if c.step == step and store.problem(c, full=False) is None]
    return found[-1].path if found else None


def load_best(trainer: Any, s: HealthState) -> dict[str, float]:
    """keep_best at the end of training (every rank): load the best evaluation's checkpoint weights into the model
    unless the last step is that evaluation's. Returns the metrics to record (best_step, best_eval_loss)."""
    if not s.keep_best or s.best is None:
        return {}
    step, loss = s.best
    if step != int(trainer.state.global_step):
        path = best_checkpoint(s.store, step)
        if path is None:
            say(HEALTH_PREFIX + f"keep_best: the checkpoint of the best evaluation (step {step}) is missing; the "
                f"last step's weights are written")
            return {}
        trainer.state.best_model_checkpoint, trainer.state.best_metric = str(path), loss
        trainer._load_best_model()
        say(HEALTH_PREFIX + f"keep_best: the model written is the best evaluation's, step {step} (eval_loss "
            f"{loss:.4f}, checkpoint {path}), not the last step {trainer.state.global_step}'s")
    return {"best_step": step, "best_eval_loss": loss}
