"""Training throughput and peak memory of cloudtune's preference recipe (DPO) against TRL's own `DPOTrainer`, on CPU,
LoRA and full fine-tune side by side in one run.

    python benchmarks/preference.py [--rounds 3] [--steps 20] [--batch-size 8] [--max-length 64] [--examples 256]
                                    [--modes lora,full] [--threads 1] [--json PATH]

Both sides tune the same GPT-2 (built from a config, about 3.3M parameters, with the tests' tiny byte-level BPE
tokenizer; nothing downloaded) on the same JSONL of `prompt` + `chosen` + `rejected` records, with the same beta
(0.1), learning rate (linear decay, no warmup), batch size, max length, seed and number of optimizer steps; fp32, no
gradient checkpointing, no eval, no checkpoint saving, no reporting, data loading in the main process:

* cloudtune: `cloudtune.train.run_recipe` (task: preference, method dpo) with a hand-built RuntimeContext, i.e. what
  `cloudtune-run` runs in the container; LoRA r=16 on the attention and MLP projections (auto), or all weights;
* TRL: the documented DPOTrainer usage (`DPOTrainer(model=..., args=DPOConfig(...), train_dataset=...,
  processing_class=tokenizer, peft_config=LoraConfig(...))`, TRL's docs "DPO Trainer" quick start), the model and
  tokenizer loaded from the same directory, the same LoRA config (r=16, alpha=32, dropout 0.05, the same target
  modules).

Every run is a fresh Python subprocess (its own 🤗 Datasets cache dir). Within a mode the two sides alternate order
every round; medians are compared.

Tokens: the Trainer's own count (`include_num_input_tokens_seen="non_padding"`: the non-pad tokens of every training
batch) on both sides. Time: the Trainer's clock around its training loop (`train_runtime`). tokens/s = tokens / time.
Peak RSS: of each subprocess (whole run), see `benchmarks/measure.py`.

Targets: cloudtune/TRL tokens/s >= 1.0 and peak RSS <= 1.0, in each mode.
"""

from __future__ import annotations

import argparse
import datetime
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
BETA = 0.1
SEED = 42
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
NO_SAVE_STEPS = 10**9


def _quiet() -> None:
    import logging
    import warnings

    import transformers

    warnings.filterwarnings("ignore")
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def child_cloudtune(a: argparse.Namespace) -> dict[str, Any]:
    _quiet()
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train import run_recipe

    ctx = RuntimeContext.single_process(Path(a.work), {"train": Path(a.data)}, job_name="bench")
    spec: dict[str, Any] = {
        "task": "preference", "model": a.model, "data": {"train": "train", "eval": None},
        "preference": {"method": "dpo", "beta": BETA},
        "hyperparameters": {"epochs": 100_000, "max_steps": a.steps, "learning_rate": LEARNING_RATE,
                            "batch_size": a.batch_size, "max_seq_len": a.max_length, "seed": SEED, "precision": "fp32",
                            "gradient_checkpointing": False, "warmup_ratio": 0.0, "weight_decay": 0.0},
        "health": {"divergence": False},
    }
    if a.lora:
        spec["lora"] = LORA
    metrics = run_recipe(ctx, TrainSpec.model_validate(spec), CheckpointSpec(every_steps=NO_SAVE_STEPS, keep=1))
    runtime = float(metrics["train_runtime_s"])
    return {"train_runtime_s": runtime, "global_step": int(metrics["global_step"]),
            "tokens": round(float(metrics["tokens_per_second"]) * runtime)}


def child_trl(a: argparse.Namespace) -> dict[str, Any]:
    _quiet()
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    dataset = load_dataset("json", data_files=a.data, split="train")
    peft_config = None
    if a.lora:
        from peft import LoraConfig

        from cloudtune.train.lora import resolve_target_modules

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], bias="none",
                                 task_type="CAUSAL_LM", target_modules=resolve_target_modules(model, "auto"),
                                 fan_in_fan_out=True)  # GPT-2's Conv1D projections, as cloudtune's lora_config says
    config = DPOConfig(
        output_dir=str(Path(a.work) / "out"), max_steps=a.steps, learning_rate=LEARNING_RATE, beta=BETA,
        per_device_train_batch_size=a.batch_size, max_length=a.max_length, seed=SEED, data_seed=SEED,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, logging_steps=10, logging_first_step=True,
        eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, bf16=False, fp16=False,
        use_cpu=True, activation_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    output = trainer.train()
    return {"train_runtime_s": float(output.metrics["train_runtime"]), "global_step": int(output.global_step),
            "tokens": int(trainer.state.num_input_tokens_seen)}


def child_main(a: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(a.threads)
    result = child_cloudtune(a) if a.child == "cloudtune" else child_trl(a)
    result |= child_rusage()
    Path(a.out).write_text(json.dumps(result))
    return 0


WORDS = ["boat", "fox", "bean", "wind", "dog", "crew", "dawn", "north", "south", "roast", "crack", "sails", "lazy"]


def make_data(path: Path, n: int, seed: int = 0) -> int:
    """`n` pairs: the chosen answer repeats the prompt's last word, the rejected one another word; returns n."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))
        last, other = prompt.split()[-1], rng.choice(WORDS)
        lines.append(json.dumps({"prompt": prompt + " :", "chosen": f" {last} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))),
                                 "rejected": f" {other} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))}))
    path.write_text("\n".join(lines) + "\n")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["cloudtune", "trl"], help=argparse.SUPPRESS)
    for name in ("--model", "--data", "--work", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    import torch
    import transformers
    import trl

    from throughput_vs_trainer import build_model

    root = Path(tempfile.mkdtemp(prefix="cloudtune-pref-vs-trl-"))
    model_dir = build_model(root / "gpt2-3m", n_positions=max(256, args.max_length))
    data = root / "pairs.jsonl"
    make_data(data, args.examples)
    counter = iter(range(10**6))

    def side(name: str, mode: str) -> dict[str, Any]:
        work = root / f"{name}-{mode}-{next(counter)}"
        work.mkdir()
        env = dict(os.environ, HF_DATASETS_CACHE=str(work / "hf-datasets"), TOKENIZERS_PARALLELISM="false",
                   PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, __file__, "--child", name, "--model", str(model_dir), "--data", str(data),
               "--work", str(work), "--out", str(work / "result.json"), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--threads", str(args.threads)] + (["--lora"] if mode == "lora" else [])
        res = run_child(cmd, work / "result.json", env=env, log=work / "log.txt")
        if res["returncode"] != 0 or res.get("global_step") != args.steps:
            raise RuntimeError(f"{name} ({mode}) failed: {res.get('log_tail')}")
        res["tokens_per_s"] = round(res["tokens"] / res["train_runtime_s"], 1)
        return res

    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "command": "python benchmarks/preference.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": trl.__version__, "steps": args.steps,
        "batch_size": args.batch_size, "max_length": args.max_length, "threads": args.threads, "modes": {}}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        runs: dict[str, list[dict[str, Any]]] = {"cloudtune": [], "trl": []}
        for r in range(args.rounds):
            for name in (("cloudtune", "trl") if r % 2 == 0 else ("trl", "cloudtune")):
                runs[name].append(side(name, mode))
        med = {name: {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                      "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in rs),
                      "tokens": rs[0]["tokens"]} for name, rs in runs.items()}
        report["modes"][mode] = med | {
            "tokens_per_s_ratio": round(med["cloudtune"]["tokens_per_s"] / med["trl"]["tokens_per_s"], 3),
            "peak_rss_ratio": round(med["cloudtune"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], 3)}
        print(f"{mode}: cloudtune {med['cloudtune']['tokens_per_s']:.0f} tok/s, {med['cloudtune']['peak_rss_mb']:.0f} MB; "
              f"TRL {med['trl']['tokens_per_s']:.0f} tok/s, {med['trl']['peak_rss_mb']:.0f} MB; ratios "
              f"{report['modes'][mode]['tokens_per_s_ratio']} x tokens/s, {report['modes'][mode]['peak_rss_ratio']} x peak RSS",
              flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
