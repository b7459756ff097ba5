"""Packing: non-pad tokens trained per second with `train.data.packing: true` against without, on a data set
with skewed lengths (most examples short, a few long), same model, batch size, steps budget and seed, on CPU.

    python benchmarks/packing.py [--rounds 3] [--examples 512] [--seq-len 256]

Both sides run the causal-LM recipe (`run_causal_lm`, what `cloudtune-run` runs) for one epoch over the same
examples. tokens_per_second is the recipe's own figure: non-pad tokens seen / training wall time. The order
alternates between rounds; medians are compared. Prints one JSON object (target: ratio >= 1.5).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from throughput_vs_trainer import WORDS, build_model  # noqa: E402  (same model builder, never downloads)


def skewed_texts(n: int, seed: int = 0) -> list[str]:
    """80% short (4-16 words), 20% long (60-160 words): padding-heavy batches without packing."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.randint(60, 160) if rng.random() < 0.2 else rng.randint(4, 16)
        out.append(" ".join(rng.choice(WORDS) for _ in range(words)))
    return out


def run(model_dir: Path, data: Path, work: Path, packing: bool, seq_len: int, batch_size: int) -> dict[str, Any]:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train.causal_lm import run_causal_lm

    ctx = RuntimeContext.single_process(work, {"train": data, "model": model_dir}, job_name="bench", provider="local")
    train = TrainSpec.model_validate({
        "model": "model", "data": {"train": "train", "eval": None, "packing": packing},
        "hyperparameters": {"epochs": 1, "batch_size": batch_size, "max_seq_len": seq_len, "learning_rate": 5e-4, "seed": 42},
    })
    return run_causal_lm(ctx, train, CheckpointSpec(every_steps=100000, keep=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"packed": [], "padded": []}
    steps: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_model(root / "model")
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in skewed_texts(args.examples)))
        for r in range(args.rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for packing in order:
                name = "packed" if packing else "padded"
                m = run(model, data, root / f"{name}-{r}", packing, args.seq_len, args.batch_size)
                results[name].append(m["tokens_per_second"])
                steps[name] = int(m["global_step"])
    packed, padded = statistics.median(results["packed"]), statistics.median(results["padded"])
    print(json.dumps({
        "examples": args.examples, "seq_len": args.seq_len, "batch_size": args.batch_size, "rounds": args.rounds,
        "optimizer_steps": steps,
        "packed_tokens_per_second": [round(x, 1) for x in results["packed"]],
        "padded_tokens_per_second": [round(x, 1) for x in results["padded"]],
        "median_packed": round(packed, 1), "median_padded": round(padded, 1),
        "ratio": round(packed / padded, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
