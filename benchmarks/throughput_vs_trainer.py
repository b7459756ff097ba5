"""Training throughput of cloudtune's causal-LM recipe against a plain transformers `Trainer` script, on CPU.

    python benchmarks/throughput_vs_trainer.py [--rounds 3] [--steps 64] [--batch-size 8] [--seq-len 64]

Both sides train the same GPT-2 (built from a config, ~3.3M parameters, never downloaded) on the same examples
with the same batch size, sequence length, learning rate, seed and number of optimizer steps, in ONE process:

* cloudtune: `cloudtune.train.causal_lm.run_causal_lm` with a hand-built RuntimeContext (no eval set, checkpoint
  every 500 steps like the Trainer's default `save_steps`), i.e. exactly what `cloudtune-run` runs in the container;
* plain: the script the transformers docs show: tokenizer -> `DataCollatorForLanguageModeling(mlm=False)` ->
  `TrainingArguments` -> `Trainer(...).train()`.

Timing is each side's `train_runtime` (the Trainer's own clock around its training loop; loading, tokenising and
saving are outside it on both sides). Tokens are non-padding input tokens: both sides see identical token sequences
(text + EOS, truncated to the same length) and train whole epochs, so both count epochs x the dataset's token total;
the recipe's own `num_input_tokens_seen` count is reported as a cross-check. The sides alternate order every round
(cloudtune first in even rounds) after one short warm-up of each; the medians are compared.

Prints one JSON object: tokens/s of each side per round and their medians, and ratio = cloudtune / plain (target >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORDS = ("the quick brown fox jumps over lazy dog a small model learns to repeat simple sentences roast beans "
         "until first crack then cool them fast boat sails north when wind comes from south numbers appear in "
         "text too").split()
LEARNING_RATE = 5e-4
SEED = 42


def build_model(path: Path, n_embd: int = 256, n_layer: int = 4, n_head: int = 4, n_positions: int = 256) -> Path:
    """The tests' tiny byte-level BPE tokenizer with a larger GPT-2 (about 3.3M parameters at the defaults)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_models import make_tiny_gpt2

    make_tiny_gpt2(path)
    small = GPT2Config.from_pretrained(path)
    config = GPT2Config(vocab_size=small.vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=small.bos_token_id, eos_token_id=small.eos_token_id, pad_token_id=small.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


def make_texts(n: int) -> list[str]:
    import random

    rng = random.Random(SEED)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 48))) for _ in range(n)]


def run_cloudtune(model_dir: Path, data_file: Path, work: Path, steps: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train.causal_lm import run_causal_lm

    work.mkdir(parents=True)  # fresh dirs: a leftover checkpoint would be resumed
    ctx = RuntimeContext.single_process(work, {"train": data_file}, job_name="bench")
    train = TrainSpec.model_validate({
        "model": str(model_dir), "data": {"train": "train", "eval": None},
        "hyperparameters": {"epochs": 1000, "max_steps": steps, "learning_rate": LEARNING_RATE,
                            "batch_size": batch_size, "max_seq_len": seq_len, "seed": SEED},
    })
    metrics = run_causal_lm(ctx, train, CheckpointSpec(every_steps=500, keep=1))
    runtime = float(metrics["train_runtime_s"])
    return {"train_runtime_s": runtime, "global_step": int(metrics["global_step"]),
            "self_reported_tokens": round(float(metrics["tokens_per_second"]) * runtime)}


def run_plain(model_dir: Path, texts: list[str], work: Path, steps: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    """The transformers docs' causal-LM fine-tuning script (a list of dicts instead of a `datasets.Dataset`)."""
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    encoded = tokenizer([t + tokenizer.eos_token for t in texts], truncation=True, max_length=seq_len)
    train_dataset = [{"input_ids": ids} for ids in encoded["input_ids"]]
    data_collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=batch_size, learning_rate=LEARNING_RATE,
        max_steps=steps, seed=SEED, report_to="none", disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator,
                      processing_class=tokenizer)
    output = trainer.train()
    return {"train_runtime_s": float(output.metrics["train_runtime"]), "global_step": int(output.global_step),
            "dataset_tokens": sum(len(x["input_ids"]) for x in train_dataset)}


def dataset_tokens(model_dir: Path, texts: list[str], seq_len: int) -> int:
    """Non-padding tokens of one epoch as the recipe encodes them (`cloudtune.data.encode.encode_records`, the same
    `encode_batch` its 🤗 Datasets map runs: text + EOS, truncated to seq_len)."""
    from transformers import AutoTokenizer

    from cloudtune.spec import DataSpec
    from cloudtune.data.encode import encode_records

    records = [(f"train.jsonl, line {i + 1}", {"text": t}) for i, t in enumerate(texts)]
    examples, _, _ = encode_records(records, DataSpec(format="text"), AutoTokenizer.from_pretrained(model_dir), seq_len)
    return sum(len(x["input_ids"]) for x in examples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps per run (a whole number of epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--examples", type=int, default=256)
    args = parser.parse_args(argv)
    if args.examples % args.batch_size or args.steps % (args.examples // args.batch_size):
        parser.error("--steps must cover whole epochs: examples/batch_size must divide it, batch_size must divide examples")
    epochs = args.steps // (args.examples // args.batch_size)

    import logging

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="cloudtune-throughput-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "gpt2-3m")
        n_params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        texts = make_texts(args.examples)
        data_file = root / "train.jsonl"
        data_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        tokens_epoch = dataset_tokens(model_dir, texts, args.seq_len)

        counter = iter(range(10**6))

        def side(name: str, steps: int) -> dict[str, Any]:
            work = root / f"{name}-{next(counter)}"
            if name == "cloudtune":
                return run_cloudtune(model_dir, data_file, work, steps, args.batch_size, args.seq_len)
            return run_plain(model_dir, texts, work, steps, args.batch_size, args.seq_len)

        side("cloudtune", 4), side("plain", 4)  # warm-up: lazy imports, allocator, thread pools
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ("cloudtune", "plain") if r % 2 == 0 else ("plain", "cloudtune")
            result: dict[str, Any] = {"order": list(order)}
            for name in order:
                res = side(name, args.steps)
                if res["global_step"] != args.steps:
                    raise RuntimeError(f"{name} ran {res['global_step']} steps, not {args.steps}")
                tokens = epochs * tokens_epoch
                if name == "plain" and res["dataset_tokens"] != tokens_epoch:
                    raise RuntimeError(f"the two sides tokenised differently: {res['dataset_tokens']} vs {tokens_epoch}")
                if name == "cloudtune" and res["self_reported_tokens"] != tokens:
                    raise RuntimeError(f"the recipe counted {res['self_reported_tokens']} tokens, expected {tokens}")
                result[name] = {"tokens_per_s": round(tokens / res["train_runtime_s"], 1),
                                "train_runtime_s": round(res["train_runtime_s"], 3)}
            result["ratio"] = round(result["cloudtune"]["tokens_per_s"] / result["plain"]["tokens_per_s"], 4)
            rounds.append(result)

    med = {name: statistics.median(r[name]["tokens_per_s"] for r in rounds) for name in ("cloudtune", "plain")}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
                   f"transformers {transformers.__version__}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model_params": n_params,
        "steps": args.steps, "batch_size": args.batch_size, "max_seq_len": args.seq_len, "epochs": epochs,
        "tokens_per_run": epochs * tokens_epoch,
        "rounds": rounds,
        "cloudtune_tokens_per_s": med["cloudtune"],
        "plain_trainer_tokens_per_s": med["plain"],
        "ratio": round(med["cloudtune"] / med["plain"], 4),
        "target_ratio": 0.97,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
