"""A local sweep against the same trials launched one by one: the sweep's wall time and its overhead per trial.

    python examples/quickstart/prepare.py
    python benchmarks/sweep_overhead.py [--trials 3] [--steps 40] [--model DIR]

Side by side in one run, on the quickstart's tiny model and data (examples/sweep/sweep.yaml, with a grid over
`--trials` learning rates, one trial at a time and no early stopping so that both sides run the same work):

- sweep: `cloudtune launch sweep.yaml --json` (Optuna asks, each trial a local job, the driver follows them);
- separate: `cloudtune launch job.yaml --set train.hyperparameters.learning_rate=X --json` for each rate, one after
  the other (the sweep's trials as plain jobs).

Prints one JSON object: both wall times (s), the overhead per trial ((sweep - separate) / trials, s) and each side's
objectives, which must agree (same values, same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RATES = [5e-4, 2e-3, 5e-3, 1e-4, 1e-3, 3e-3]


def write_specs(where: Path, trials: int, steps: int, model: Path | None) -> tuple[Path, Path, list[float]]:
    spec = yaml.safe_load((ROOT / "examples/sweep/sweep.yaml").read_text())
    base = ROOT / "examples/sweep"
    spec["inputs"] = {k: str((base / v).resolve()) for k, v in spec["inputs"].items()}
    spec["train"]["model"] = str(model.resolve() if model else (base / spec["train"]["model"]).resolve())
    spec["train"]["hyperparameters"].update(max_steps=steps, eval_every=max(1, steps // 4))
    rates = RATES[:trials]
    spec["sweep"] = {"parameters": {"learning_rate": {"choice": rates}}, "algorithm": "grid", "max_trials": trials,
                     "parallel_trials": 1, "early_stopping": "off"}
    sweep = where / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    job = dict(spec)
    del job["sweep"]
    single = where / "job.yaml"
    single.write_text(yaml.safe_dump(job))
    return sweep, single, rates


def launch(env: dict[str, str], *args: str) -> tuple[float, dict]:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cloudtune.cli", "launch", *args, "--json"], env=env, check=True,
                         capture_output=True, text=True)
    return time.perf_counter() - began, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per trial")
    parser.add_argument("--model", type=Path, default=None, help="base model dir (default: the quickstart's)")
    args = parser.parse_args()
    trials = args.trials
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CLOUDTUNE_HOME=str(Path(tmp) / "home"))
        sweep, single, rates = write_specs(Path(tmp), trials, args.steps, args.model)
        sweep_s, info = launch(env, str(sweep))
        separate: dict[float, float] = {}
        separate_s = 0.0
        for rate in rates:
            took, job = launch(env, str(single), "--set", f"train.hyperparameters.learning_rate={rate}")
            separate_s += took
            separate[rate] = job["metrics"]["eval_loss"]
    swept = {t["parameters"]["hyperparameters.learning_rate"]: t["objective"] for t in info["trials"]}
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "trials": trials, "steps": args.steps,
        "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
        "sweep_wall_s": round(sweep_s, 1), "separate_jobs_wall_s": round(separate_s, 1),
        "overhead_per_trial_s": round((sweep_s - separate_s) / trials, 1),
        "objectives_agree": all(abs(swept[r] - separate[r]) < 1e-4 for r in rates),
        "sweep_objectives": {str(r): round(swept[r], 4) for r in rates},
        "separate_objectives": {str(r): round(separate[r], 4) for r in rates},
    }, indent=2))


if __name__ == "__main__":
    main()
