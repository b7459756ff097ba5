"""Training throughput with the health checks on against off, side by side in one process.

    python benchmarks/health_overhead.py [--rounds 3] [--steps 100] [--eval-every 50] [--batch-size 8] [--seq-len 64]

Both sides run `cloudtune.train.causal_lm.run_causal_lm` on the same GPT-2 (built from a config, ~3.3M parameters,
never downloaded; see throughput_vs_trainer.build_model), the same examples, batch size, sequence length, seed and
number of optimizer steps, with an eval set evaluated every `--eval-every` steps (evaluation itself runs on both
sides). The only difference is `train.health`:

* on: divergence (the loss read every step), overfitting, collapse forced on (4 prompts x 32 greedy tokens at every
  evaluation, after a base measurement outside the timed loop);
* no_collapse: divergence and overfitting only (the per-step cost);
* off: `health: {divergence: false, overfitting: false, collapse: false}`.

Throughput is the recipe's own `tokens_per_second` (non-padding tokens over the Trainer's `train_runtime`, which
includes the evaluations during training and so the collapse probe's generation). The sides alternate order every
round after one short warm-up of each; medians are compared. Also reported: training tokens per CPU second of the
process over each whole run (steadier than wall time where other work shares the cores; it includes loading and
the evaluations before and after training, identical on every side, plus the collapse probe's base and final
generations). Where other work shares the cores, the difference of two runs is mostly noise; so the checks' own
costs are also timed directly (`components`: the per-step bookkeeping, and the collapse probe per evaluation) and
turned into the overhead at `--eval-every`: (eval_every x per-step cost + probe) / (eval_every x a step's time
with the checks off). Prints one JSON object; overhead = 1 - side / off per side (target < 3%).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "benchmarks"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

OFF = {"divergence": False, "overfitting": False, "collapse": False}
ON = {"divergence": True, "overfitting": True, "collapse": True}
NO_COLLAPSE = {"divergence": True, "overfitting": True, "collapse": False}


def write_data(root: Path, examples: int, seed: int = 0) -> dict[str, Path]:
    """Train and eval inputs (a directory with one .jsonl each) of random sentences from the benchmark's words."""
    import random

    from throughput_vs_trainer import WORDS

    rng = random.Random(seed)
    paths = {}
    for name, count in (("train", examples), ("eval", 16)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))}) for _ in range(count)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[name] = folder
    return paths


def run_side(model: Path, data: dict[str, Path], work: Path, health: dict[str, bool],
             args: Any) -> tuple[float, float, float]:
    """One training run: (tokens/s over the Trainer's wall-clock train_runtime, training tokens per CPU second of
    this process over the whole run: loading, evaluations and saving included, the same on every side, and the
    train_runtime in seconds)."""
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train.causal_lm import run_causal_lm

    train = TrainSpec.model_validate({
        "model": str(model), "data": {"train": "train", "eval": "eval"}, "health": health,
        "hyperparameters": {"max_steps": args.steps, "learning_rate": 5e-4, "batch_size": args.batch_size,
                            "max_seq_len": args.seq_len, "seed": 42, "eval_every": args.eval_every}})
    ctx = RuntimeContext.single_process(work, data, job_name="bench", provider="local")
    started = time.process_time()
    metrics = run_causal_lm(ctx, train, CheckpointSpec(every_steps=100_000, keep=1))
    cpu = time.process_time() - started
    tokens = float(metrics["tokens_per_second"]) * float(metrics["train_runtime_s"])
    return float(metrics["tokens_per_second"]), tokens / cpu, float(metrics["train_runtime_s"])


def component_costs(model: Path, data: dict[str, Path], args: Any) -> dict[str, float]:
    """The checks' own costs, timed directly (steadier than the difference of two noisy runs): seconds per optimizer
    step of the divergence/overfitting bookkeeping (a loss handed over, read and judged), and seconds per evaluation
    of the collapse probe (4 prompts x 32 greedy tokens, the defaults)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cloudtune.spec import TrainSpec
    from cloudtune.train.health import CollapseProbe, health_state, read_step_loss

    train = TrainSpec.model_validate({"model": "m", "hyperparameters": {"eval_every": args.eval_every}})
    state = health_state(train, None, None, None, xla=False)
    n = 2000
    started = time.perf_counter()
    for step in range(n):
        state.pending = torch.tensor(2.0 + (step % 7) / 10)  # what the watched training_step hands over
        read_step_loss(state, step, "cpu")
    per_step = (time.perf_counter() - started) / n
    net = AutoModelForCausalLM.from_pretrained(str(model))
    lines = (data["eval"] / "eval.jsonl").read_text().splitlines()[:4]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    prompts = [tok(json.loads(ln)["text"])["input_ids"][:16] for ln in lines]
    probe = CollapseProbe(prompts, tok.pad_token_id, 32)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        probe.check(net, "bench")
        times.append(time.perf_counter() - started)
    return {"per_step_s": per_step, "probe_per_evaluation_s": statistics.median(times)}


def _summary(values: dict[str, list[float]]) -> dict[str, Any]:
    """Each side's values and median, and the overheads against `off` (1 - side / off)."""
    medians = {k: statistics.median(v) for k, v in values.items()}
    return {"runs": {k: [round(x, 1) for x in v] for k, v in values.items()},
            "median": {k: round(m, 1) for k, m in medians.items()},
            "overhead": {k: round(1 - medians[k] / medians["off"], 4) for k in medians if k != "off"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args(argv)

    import torch

    from throughput_vs_trainer import build_model

    torch.set_num_threads(max(1, args.threads))
    sides = {"on": ON, "no_collapse": NO_COLLAPSE, "off": OFF}
    wall: dict[str, list[float]] = {name: [] for name in sides}
    per_cpu: dict[str, list[float]] = {name: [] for name in sides}
    runtimes: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="ct-health-bench-") as tmp:
        root = Path(tmp)
        model = build_model(root / "model")
        data = write_data(root / "data", examples=args.steps * args.batch_size)
        warm = argparse.Namespace(**{**vars(args), "steps": 4, "eval_every": 2})
        for name, health in sides.items():
            run_side(model, data, root / f"warm-{name}", health, warm)
        for i in range(args.rounds):
            for name in (list(sides) if i % 2 == 0 else list(reversed(sides))):
                rate, cpu_rate, runtime = run_side(model, data, root / f"r{i}-{name}", sides[name], args)
                runtimes[name].append(runtime)
                wall[name].append(rate)
                per_cpu[name].append(cpu_rate)
        costs = component_costs(model, data, args)
    step_s = statistics.median(runtimes["off"]) / args.steps  # a step, evaluations included, with the checks off
    interval = args.eval_every * step_s
    costs["step_s_checks_off"] = step_s
    costs["overhead_at_eval_every"] = (args.eval_every * costs["per_step_s"] + costs["probe_per_evaluation_s"]) / interval
    costs["overhead_without_collapse"] = costs["per_step_s"] / step_s
    report = {
        "steps": args.steps, "eval_every": args.eval_every, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "tokens_per_second": _summary(wall), "tokens_per_cpu_second": _summary(per_cpu),
        "components": {k: round(v, 6) for k, v in costs.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
