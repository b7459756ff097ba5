"""The local sweep driver: Optuna asks for values, each trial runs as an ordinary local job, Optuna is told the result.

Run detached as `python -m cloudtune.local.sweeprun SWEEP_DIR` (cloudtune.local.sweepplan starts it), like a local job's supervisor:
its state file (`state.json`: state, `supervisor_pid` = this process) and log (`job.log`) are a local job's, so the
local launcher's status, logs and cancel work on a sweep as on any job. Layout of SWEEP_DIR:

- `sweep.json`: the sweep's id, spec (a JobSpec dump with its `sweep`), spec path and launch suffix;
- `optuna.journal`: the study (Optuna's JournalStorage, this process its only writer), which a resumed sweep
  reloads: finished trials are never run again, trials still running are followed again;
- `state.json`, `job.log`: as a local job's.

Each trial is `trial_spec(spec, values)` planned by the local launcher and submitted through `cloudtune.api.submit`
(same supervisor, contract emulation and job store as `cloudtune launch`), its record linked to the sweep
(`extra`: sweep, trial, parameters; at its end objective, intermediate and pruned). Values are compiled into the
trial's job config before it starts, so every rank of a multi-process trial reads the same ones. Trials run at once up
to `parallel_trials`, bounded by this machine's cores (CPU trials) or GPU sets (one set of the trial's accelerator count
per trial, given as CUDA_VISIBLE_DEVICES). Early stopping is Optuna's MedianPruner over the intermediate values the
trial reports (its status file's `history`), the rule of `sweep.early_stopping: auto`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


POLL_S = 1.0
SWEEP_FILE = "sweep.json"
JOURNAL_FILE = "optuna.journal"


def log(sweep_dir: Path, text: str) -> None:
    """One line of the sweep's own log (`job.log`, what `cloudtune logs SWEEP` prints)."""
    with open(sweep_dir / "job.log", "a", encoding="utf-8") as fh:
        fh.write(f"[cloudtune] sweep: {text}\n")


def slots(spec: Any, environ: dict[str, str] | None = None) -> list[str | None]:
    """One entry per trial that may run at once: None for CPU trials (bounded by the machine's cores over the trial's
    processes), else the CUDA_VISIBLE_DEVICES of a GPU set (this machine's GPUs cut into sets of the trial's count).
    Never more than the sweep's parallel_trials, never fewer than one."""
    env = os.environ if environ is None else environ
    wanted = spec.sweep.parallel_trials
    accel = spec.resources.accel
    if accel.is_cpu:
        per_trial = spec.processes_per_node() * spec.resources.nodes
        return [None] * max(1, min(wanted, (os.cpu_count() or 1) // max(1, per_trial)))
    visible = env.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(_gpu_count())]
    per_trial = accel.count * spec.resources.nodes
    sets = [",".join(gpus[i:i + per_trial]) for i in range(0, len(gpus) - per_trial + 1, per_trial)]
    return sets[:wanted] or [None]


def _gpu_count() -> int:
    try:
        import torch  # only for a GPU sweep: how many devices this machine has

        return int(torch.cuda.device_count())
    except ImportError:
        return 0


def make_study(sweep_dir: Path, spec: Any, study_name: str) -> Any:
    """The sweep's Optuna study in its journal file (created, or loaded when the sweep resumes). The sampler's seed
    is the job's seed plus the trials the journal already holds: a resumed sweep draws on from where it stopped,
    not the first draws again (which would repeat the trials already run)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = spec.sweep
    seed = spec.train.hyperparameters.seed if spec.train is not None else 0
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))
    study = optuna.create_study(storage=storage, study_name=study_name, direction=sweep.objective.direction,
                                sampler=sampler(sweep, seed), pruner=pruner(sweep), load_if_exists=True)
    done = len(study.get_trials(deepcopy=False))
    if done:
        study.sampler = sampler(sweep, seed + done)
    elif sweep.algorithm == "grid":
        enqueue_grid(study, sweep, seed)
    return study


def enqueue_grid(study: Any, sweep: Any, seed: int) -> None:
    """Every combination of the grid's values, enqueued once in a seeded order (`ask` takes them in turn; a resumed
    sweep finds the rest still waiting in the journal)."""
    import itertools
    import random

    ranges = sweep.ranges()
    combos = [dict(zip(ranges, values)) for values in itertools.product(*(r.grid() for r in ranges.values()))]
    random.Random(seed).shuffle(combos)
    for params in combos[:sweep.max_trials]:
        study.enqueue_trial(params)


def sampler(sweep: Any, seed: int) -> Any:
    """random: RandomSampler; bayesian: TPE, the first third of the budget (at least 2, at most Optuna's default 10)
    drawn at random to seed its model; grid: the combinations are enqueued (`enqueue_grid`), so the sampler only
    backs up an enqueued trial (Optuna's GridSampler stops a study only inside `optimize`, which ask/tell never runs)."""
    import optuna

    if sweep.algorithm in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, min(10, sweep.max_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def pruner(sweep: Any) -> Any:
    """early_stopping auto: the median stopping rule (a trial whose value at a step is worse than the median of the
    finished trials' at that step stops), once 2 trials have finished; off: no pruning."""
    import optuna

    if sweep.early_stopping == "off":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def suggest(trial: Any, ranges: dict[str, Any]) -> dict[str, Any]:
    """The trial's values, one per parameter, asked of Optuna under the parameter's name."""
    values: dict[str, Any] = {}
    for name, rng in ranges.items():
        if rng.choice is not None:
            values[name] = trial.suggest_categorical(name, list(rng.choice))
        elif rng.int is not None:
            values[name] = trial.suggest_int(name, rng.int[0], rng.int[1], log=rng.log)
        else:
            low, high = rng.bounds
            values[name] = trial.suggest_float(name, low, high, log=rng.loguniform is not None)
    return values


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / SWEEP_FILE).read_text(encoding="utf-8"))

