"""Training throughput and peak memory of cloudtune's causal-LM recipe against TRL's `SFTTrainer`, on CPU.

    python benchmarks/sft_vs_trl.py [--rounds 3] [--steps 20] [--batch-size 8] [--max-length 128] [--examples 512]
                                    [--modes unpacked,packed] [--trl-packing bfd] [--json PATH]

Both sides train the same GPT-2 (built from a config, about 3.3M parameters, with the tests' tiny byte-level BPE
tokenizer; nothing downloaded) on the same JSONL of `text` records (skewed lengths: 80% short, 20% long, every one
shorter than --max-length, so neither side truncates), with the same learning rate (linear decay, no warmup, no
weight decay), batch size, max length, seed and number of optimizer steps; fp32, no gradient checkpointing, no
eval, no checkpoint saving, no reporting, data loading in the main process, --threads torch threads (default 1):

* cloudtune: `cloudtune.train.causal_lm.run_causal_lm` with a hand-built RuntimeContext, i.e. what `cloudtune-run`
  runs in the container (`train.data.packing` false / true: TRL's bfd packing; on SDPA the packed rows stay rows
  with position ids restarting per example, the block mask built per row by transformers);
* TRL: `SFTTrainer` with an `SFTConfig` (`packing=False` / `packing=True` with `packing_strategy` --trl-packing,
  default "bfd", which TRL runs padding-free: each batch one flattened sequence with position ids, the attention
  mask built by transformers from them). If TRL's bfd cannot run here the packed mode falls back to "wrapped" and the
  report says so (`trl_packing_strategy`, `trl_packing_fallback`).

Note (transformers 5.24, TRL 1.16, SDPA on CPU): TRL's padding-free batches carry `cu_seq_lens_*` / `max_length_*`,
and with them transformers builds no block-diagonal mask for SDPA (plain causal attention over the flattened
batch), so TRL's packed rows attend across examples (logits differ from the example run alone); cloudtune's carry
position ids only and get the block-diagonal mask (logits equal to the example run alone). The packed comparison is
therefore cloudtune exact against TRL cheaper-but-leaky on this attention implementation.

Every run is a fresh Python subprocess (its own 🤗 Datasets cache dir, so neither side reads the other's cache).
The modes run one after another; within a mode the two sides alternate order every round; medians are compared.

Tokens: the real (non-pad) tokens of the examples each training batch holds, counted identically on both sides by
wrapping the data collator the trainer uses (the sum of `len(input_ids)` over the features it is given: an
unpacked example, or a packed row, which holds no padding). Time: the Trainer's own clock around its training loop
(`train_runtime`; loading, tokenising, packing and saving are outside it on both sides). tokens/s = tokens / time.
cloudtune's own figure (`tokens_per_second` from metrics.json) is kept as a cross-check.

Peak RSS: of each subprocess (whole run: imports, model, data preparation, training), see `benchmarks/measure.py`.

Targets: cloudtune/TRL tokens/s >= 1.0 in each mode; cloudtune/TRL peak RSS <= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from measure import child_rusage, run_child  # noqa: E402

LEARNING_RATE = 5e-4
SEED = 42
NO_SAVE_STEPS = 10**9  # cloudtune: a checkpoint interval no run reaches (TRL: save_strategy="no")


# ----------------------------------------------------------------------------------------------
# Children: one side, one mode, in a fresh process
# ----------------------------------------------------------------------------------------------


class TokenCounter:
    """Wraps a data collator; counts the batches and the real tokens of the features each batch is built from."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokens = 0
        self.batches = 0

    def __call__(self, features: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        self.batches += 1
        self.tokens += sum(len(f["input_ids"]) for f in features)
        return self.inner(features, *args, **kwargs)


def _quiet() -> None:
    import logging
    import warnings

    import transformers

    warnings.filterwarnings("ignore")
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def child_cloudtune(a: argparse.Namespace) -> dict[str, Any]:
    _quiet()
    import cloudtune.train.causal_lm as recipe
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec

    counters: list[TokenCounter] = []
    run_training = recipe.run_training

    def counted(*args: Any, **kwargs: Any) -> Any:  # the recipe's own collator, counted on its way in
        counters.append(TokenCounter(kwargs["collator"]))
        kwargs["collator"] = counters[-1]
        return run_training(*args, **kwargs)

    recipe.run_training = counted
    work = Path(a.work)
    ctx = RuntimeContext.single_process(work, {"train": Path(a.data)}, job_name="bench")
    train = TrainSpec.model_validate({
        "model": a.model, "data": {"train": "train", "eval": None, "packing": a.packing},
        "hyperparameters": {"epochs": 100_000, "max_steps": a.steps, "learning_rate": LEARNING_RATE,
                            "batch_size": a.batch_size, "max_seq_len": a.max_length, "seed": SEED,
                            "precision": "fp32", "gradient_checkpointing": False, "warmup_ratio": 0.0,
                            "weight_decay": 0.0},
    })
    metrics = recipe.run_causal_lm(ctx, train, CheckpointSpec(every_steps=NO_SAVE_STEPS, keep=1))
    runtime = float(metrics["train_runtime_s"])
    return {"train_runtime_s": runtime, "global_step": int(metrics["global_step"]), "tokens": counters[0].tokens,
            "batches": counters[0].batches, "self_reported_tokens_per_s": float(metrics["tokens_per_second"])}


def child_trl(a: argparse.Namespace) -> dict[str, Any]:
    _quiet()
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    dataset = load_dataset("json", data_files=a.data, split="train")
    packing = {"packing": True, "packing_strategy": a.trl_packing} if a.packing else {"packing": False}
    config = SFTConfig(
        output_dir=str(Path(a.work) / "out"), max_steps=a.steps, learning_rate=LEARNING_RATE,
        per_device_train_batch_size=a.batch_size, max_length=a.max_length, seed=SEED, data_seed=SEED,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, logging_steps=10, logging_first_step=True,
        eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, bf16=False, fp16=False,
        use_cpu=True, activation_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        **packing,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    output = trainer.train()
    return {"train_runtime_s": float(output.metrics["train_runtime"]), "global_step": int(output.global_step),
            "tokens": counter.tokens, "batches": counter.batches, "padding_free": bool(trainer.padding_free),
            "trl_packing_strategy": a.trl_packing if a.packing else None}


def child_main(a: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(a.threads)
    result = child_cloudtune(a) if a.child == "cloudtune" else child_trl(a)
    result |= child_rusage()
    Path(a.out).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------


def skewed_texts(n: int, max_words: int, seed: int = 0) -> list[str]:
    """80% short (4-16 words), 20% long (up to `max_words` words): padding-heavy batches without packing."""
    from throughput_vs_trainer import WORDS

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.randint(max_words // 3, max_words) if rng.random() < 0.2 else rng.randint(4, 16)
        out.append(" ".join(rng.choice(WORDS) for _ in range(words)))
    return out


def make_data(model_dir: Path, path: Path, n: int, max_length: int) -> dict[str, Any]:
    """The JSONL of `text` records; the longest text (+ EOS) is made to fit max_length so no side truncates."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_words = max_length
    while True:
        texts = skewed_texts(n, max_words)
        lengths = [len(x) + 1 for x in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        if max(lengths) <= max_length:
            break
        max_words = int(max_words * 0.9)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return {"examples": n, "tokens_per_epoch": sum(lengths), "longest_tokens": max(lengths),
            "mean_tokens": round(sum(lengths) / n, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--modes", default="unpacked,packed")
    parser.add_argument("--trl-packing", default="bfd", choices=["bfd", "bfd_split", "wrapped"],
                        help="TRL's packing_strategy in the packed mode (falls back to wrapped if it fails here)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (OpenMP) threads of each run; 1 by default: steadier figures on a shared machine")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of each run)")
    # child mode
    parser.add_argument("--child", choices=["cloudtune", "trl"], help=argparse.SUPPRESS)
    for name in ("--model", "--data", "--work", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    import torch
    import transformers
    import trl

    transformers.utils.logging.set_verbosity_error()
    from throughput_vs_trainer import build_model

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    tmp = tempfile.mkdtemp(prefix="cloudtune-sft-vs-trl-")
    root = Path(tmp)
    try:
        model_dir = build_model(root / "gpt2-3m", n_positions=max(256, args.max_length))
        n_params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        data = root / "train.jsonl"
        data_info = make_data(model_dir, data, args.examples, args.max_length)
        counter = iter(range(10**6))
        trl_strategy, fallback = args.trl_packing, None

        def side(name: str, mode: str) -> dict[str, Any]:
            nonlocal trl_strategy, fallback
            k = next(counter)
            work = root / f"{name}-{mode}-{k}"
            work.mkdir()
            env = dict(os.environ, HF_DATASETS_CACHE=str(work / "hf-datasets"), TOKENIZERS_PARALLELISM="false",
                       PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            cmd = [sys.executable, __file__, "--child", name, "--model", str(model_dir), "--data", str(data),
                   "--work", str(work), "--out", str(work / "result.json"), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--trl-packing", trl_strategy, "--threads", str(args.threads)] + (["--packing"] if mode == "packed" else [])
            res = run_child(cmd, work / "result.json", env=env, log=work / "log.txt")
            if res["returncode"] != 0 and name == "trl" and mode == "packed" and trl_strategy != "wrapped":
                fallback = f"{trl_strategy} failed here: {res.get('log_tail', '')[-600:]}"
                trl_strategy = "wrapped"
                return side(name, mode)
            if res["returncode"] != 0:
                raise RuntimeError(f"{name} ({mode}) failed with exit status {res['returncode']}:\n{res.get('log_tail')}")
            if res["global_step"] != args.steps:
                raise RuntimeError(f"{name} ({mode}) ran {res['global_step']} steps, not {args.steps}")
            res["tokens_per_s"] = round(res["tokens"] / res["train_runtime_s"], 1)
            return res

        report_modes: dict[str, Any] = {}
        for mode in modes:
            rounds = []
            for r in range(args.rounds):
                order = ("cloudtune", "trl") if r % 2 == 0 else ("trl", "cloudtune")
                entry: dict[str, Any] = {"order": list(order)}
                for name in order:
                    res = side(name, mode)
                    entry[name] = {k: res.get(k) for k in (
                        "tokens_per_s", "tokens", "batches", "train_runtime_s", "peak_rss_mb", "self_maxrss_mb",
                        "children_maxrss_mb", "tree_peak_rss_mb", "tree_peak_pss_mb", "wall_s", "self_reported_tokens_per_s",
                        "padding_free", "trl_packing_strategy") if res.get(k) is not None}
                print(f"[{mode} round {r + 1}] " + ", ".join(
                    f"{n}: {entry[n]['tokens_per_s']} tok/s, {entry[n]['peak_rss_mb']:.0f} MB" for n in order),
                    file=sys.stderr, flush=True)
                rounds.append(entry)
            med = {n: {"tokens_per_s": statistics.median(r[n]["tokens_per_s"] for r in rounds),
                       "peak_rss_mb": statistics.median(r[n]["peak_rss_mb"] for r in rounds),
                       "tokens_per_run": statistics.median(r[n]["tokens"] for r in rounds)}
                   for n in ("cloudtune", "trl")}
            report_modes[mode] = {
                "rounds": rounds, "median": med,
                "tokens_per_s_ratio": round(med["cloudtune"]["tokens_per_s"] / med["trl"]["tokens_per_s"], 3),
                "peak_rss_ratio": round(med["cloudtune"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], 3),
            }
            if mode == "packed":
                report_modes[mode]["trl_packing_strategy"] = trl_strategy
                report_modes[mode]["trl_padding_free"] = rounds[-1]["trl"].get("padding_free")
                if fallback:
                    report_modes[mode]["trl_packing_fallback"] = fallback
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "benchmark": "sft_vs_trl",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, trl {trl.__version__}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model_params": n_params, "data": data_info,
        "threads_per_run": args.threads, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length, "rounds": args.rounds,
        "learning_rate": LEARNING_RATE,
        "tokens": "real (non-pad) tokens of the examples in each training batch, counted at the data collator",
        "modes": report_modes,
        "targets": {"tokens_per_s_ratio": ">= 1.0", "peak_rss_ratio": "<= 1.0"},
    }
    if args.keep:
        report["temp_dir"] = tmp
    print_table(report)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_table(report: dict[str, Any]) -> None:
    lines = [f"{'mode':<10} {'side':<10} {'tokens/s':>10} {'peak RSS MB':>12} {'tokens/run':>11}"]
    for mode, m in report["modes"].items():
        for name in ("cloudtune", "trl"):
            med = m["median"][name]
            label = name if name == "cloudtune" or mode != "packed" else f"trl ({m.get('trl_packing_strategy')})"
            lines.append(f"{mode:<10} {label:<10} {med['tokens_per_s']:>10.1f} {med['peak_rss_mb']:>12.0f} "
                         f"{med['tokens_per_run']:>11.0f}")
        lines.append(f"{mode:<10} {'ratio':<10} {m['tokens_per_s_ratio']:>10.3f} {m['peak_rss_ratio']:>12.3f}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
