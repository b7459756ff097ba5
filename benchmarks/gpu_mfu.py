"""Model FLOPs utilisation of cloudtune's causal-LM recipe on one CUDA GPU.

    python benchmarks/gpu_mfu.py [--size 350M] [--steps 30] [--warmup-steps 5] [--batch-size 8] [--seq-len 1024]
                                 [--configs full,lora,full-packed,lora-packed] [--peak-tflops T] [--json PATH]
    python benchmarks/gpu_mfu.py --dry-run     # any machine: a tiny model through every config (checks, no figures)

Builds a GPT-2-style model of the chosen size from a config (never downloaded; the tokenizer is the tests' tiny
byte-level BPE, the embedding keeps GPT-2's 50,304-row vocabulary), then trains it with the recipe itself
(`cloudtune.train.causal_lm.run_causal_lm`: bf16 autocast with fp32 master weights, AdamW, the recipe's Trainer
arguments, no gradient checkpointing unless --gradient-checkpointing) in four configs:

* `full` / `lora` (all weights / a LoRA adapter, r 16 on the recipe's auto target modules): full-length sequences,
  no padding (every example longer than seq_len, truncated);
* `full-packed` / `lora-packed`: `train.data.packing: true` on examples of seq_len/8 to seq_len words (TRL's bfd
  packing; each batch one flattened sequence with position ids).

Each config: first `--warmup-steps` steps (CUDA context, kernel selection, allocator), then `--steps` steps that
are measured with the recipe's own clock (`train_runtime`) and token count (real, non-padding tokens).

    MFU = flops_per_token * tokens/s / peak bf16 FLOP/s
    flops_per_token = 6N (full fine-tuning), 4N + 6N_lora (LoRA: no weight gradients of the frozen weights)

N counts every parameter (tied embeddings once), N_lora the adapter's; the 6N rule leaves out attention's
O(seq_len^2) FLOPs, so this MFU is a slight under-estimate at long sequence lengths (and packed batches, flattened
into one sequence of batch_size * seq_len tokens, do more attention work than the rule counts unless the attention
kernel skips the masked blocks, as flash-attention's varlen kernels do). The peak is the catalog's
dense bf16 figure for the GPU (`cloudtune.catalog.load_catalog().peak_bf16_tflops(name)`, the name matched from
`torch.cuda.get_device_name()`), or `--peak-tflops`.

Prints one JSON object (and writes it to --json). Needs a CUDA GPU with bf16; on a machine without one it exits
with status 2 and says so, unless --dry-run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# GPT-2 family shapes: n_embd, n_layer, n_head
SIZES = {
    "124M": (768, 12, 12),
    "350M": (1024, 24, 16),
    "774M": (1280, 36, 20),
    "1.5B": (1600, 48, 25),
}
VOCAB = 50304  # GPT-2's 50,257 rounded up to a multiple of 64
WORDS = "the quick brown fox jumps over a lazy dog while boats sail north and beans roast until the first crack".split()


def fail(message: str) -> None:
    print(f"gpu_mfu: {message}", file=sys.stderr)
    raise SystemExit(2)


def match_accelerator(device_name: str, total_memory_gb: float) -> str | None:
    """The catalog's neutral name for a CUDA device name such as 'NVIDIA H100 80GB HBM3' or 'NVIDIA A100-SXM4-40GB'."""
    from cloudtune.catalog import load_catalog

    catalog = load_catalog()
    tokens = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    candidates = []
    for name in catalog.accelerators():
        info = catalog.info(name)
        if info is None or info.vendor != "nvidia":
            continue
        if name.split("-")[0].upper() in tokens:
            candidates.append(info)
    if len(candidates) > 1:  # A100-40GB vs A100-80GB: the memory decides
        candidates.sort(key=lambda i: abs(i.memory_gb - total_memory_gb))
    return candidates[0].name if candidates else None


def build_model(path: Path, n_embd: int, n_layer: int, n_head: int, seq_len: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_models import make_tiny_gpt2

    make_tiny_gpt2(path)  # the tokenizer (and a throwaway tiny model, overwritten below)
    small = GPT2Config.from_pretrained(path)
    config = GPT2Config(vocab_size=VOCAB, n_positions=max(1024, seq_len), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=small.bos_token_id, eos_token_id=small.eos_token_id, pad_token_id=small.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


CONFIGS = ("full", "lora", "full-packed", "lora-packed")
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}


def run(model: Path, data: Path, work: Path, *, steps: int, batch_size: int, seq_len: int, lora: bool = False,
        packing: bool = False, gradient_checkpointing: bool = False) -> dict[str, Any]:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train.causal_lm import run_causal_lm

    ctx = RuntimeContext.single_process(work, {"train": data}, job_name="gpu-mfu")
    spec: dict[str, Any] = {
        "model": str(model), "data": {"train": "train", "eval": None, "packing": packing},
        "hyperparameters": {"epochs": 1000, "max_steps": steps, "learning_rate": 1e-4, "batch_size": batch_size,
                            "max_seq_len": seq_len, "seed": 42, "gradient_checkpointing": gradient_checkpointing},
    }
    if lora:
        spec["lora"] = LORA
    return run_causal_lm(ctx, TrainSpec.model_validate(spec), CheckpointSpec(every_steps=steps + 1000, keep=1))


def trainable_params(model_dir: Path) -> int:
    """Parameters the recipe's LoRA (`LORA`, target_modules auto) trains on this model."""
    import transformers

    from cloudtune.spec import LoraSpec
    from cloudtune.train.lora import apply_lora

    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = apply_lora(base, LoraSpec.model_validate(LORA), "causal-lm")
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def flops_per_token(params: int, lora_params: int, lora: bool) -> int:
    """Model FLOPs per trained token (the 6N rule): full fine-tuning 6N (forward 2N, backward 4N); LoRA
    4N + 6N_lora (forward 2N, the activation gradients 2N, no weight gradients of the frozen weights; the adapter's
    own forward, backward and weight gradients 6N_lora)."""
    return 4 * params + 6 * lora_params if lora else 6 * params


def write_data(path: Path, n: int, words: int | tuple[int, int], seed: int = 0) -> None:
    """`n` text records: of exactly `words` words, or of a uniform number of words in the (lo, hi) range."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = words if isinstance(words, int) else rng.randint(*words)
        lines.append(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(k))}) + "\n")
    path.write_text("".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="350M")
    parser.add_argument("--n-embd", type=int, help="override the preset's width")
    parser.add_argument("--n-layer", type=int, help="override the preset's depth")
    parser.add_argument("--n-head", type=int, help="override the preset's head count")
    parser.add_argument("--steps", type=int, default=30, help="measured optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (default: from the catalog)")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: a tiny model (n_embd 64, 2 layers, seq-len 64, batch 2, 2 + 1 steps) "
                             "through every config on this machine's device, MFU against --accelerator's peak; checks "
                             "the benchmark runs, measures nothing")
    parser.add_argument("--accelerator", default="H100", help="--dry-run: the catalog accelerator whose peak is used")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")

    import torch

    from cloudtune.catalog import load_catalog

    if args.dry_run:
        args.n_embd, args.n_layer, args.n_head = args.n_embd or 64, args.n_layer or 2, args.n_head or 2
        args.seq_len, args.batch_size, args.steps, args.warmup_steps = 64, 2, 2, 1
        device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        accelerator = load_catalog().normalize(args.accelerator)
        peak = args.peak_tflops or load_catalog().peak_bf16_tflops(accelerator)
        peak_source = "--peak-tflops" if args.peak_tflops else f"catalog ({accelerator}, --dry-run)"
        if not peak:
            fail(f"no catalog bf16 peak for {args.accelerator!r}; pass --peak-tflops")
    else:
        if not torch.cuda.is_available():
            fail("no CUDA GPU is visible (torch.cuda.is_available() is False); this benchmark measures MFU on a GPU "
                 "and does not run on CPU. Run it on a CUDA machine with a CUDA build of torch (or --dry-run to "
                 "check that it runs).")
        if not torch.cuda.is_bf16_supported():
            fail(f"{torch.cuda.get_device_name()} has no bf16 support; the recipe trains in bf16 only where it is supported")
        device_name = torch.cuda.get_device_name()
        total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
        accelerator = match_accelerator(device_name, total_gb)
        if args.peak_tflops is not None:
            peak, peak_source = args.peak_tflops, "--peak-tflops"
        else:
            peak = load_catalog().peak_bf16_tflops(accelerator) if accelerator else None
            peak_source = f"catalog ({accelerator})"
            if not peak:
                fail(f"no catalog bf16 peak for {device_name!r} (matched: {accelerator}); pass --peak-tflops")

    n_embd, n_layer, n_head = SIZES[args.size]
    n_embd, n_layer, n_head = args.n_embd or n_embd, args.n_layer or n_layer, args.n_head or n_head

    import transformers

    transformers.utils.logging.set_verbosity_error()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cloudtune-mfu-") as tmp:
        root = Path(tmp)
        model = build_model(root / "gpt2", n_embd, n_layer, n_head, args.seq_len)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(model)
        params = sum(p.numel() for p in loaded.parameters())
        attn = getattr(loaded.config, "_attn_implementation", None)
        del loaded
        lora_params = trainable_params(model) if any(c.startswith("lora") for c in configs) else 0
        n_examples = args.batch_size * 16
        # unpacked: every example longer than seq_len tokens, so every batch is full (no padding) after truncation;
        # packed: lengths spread from seq_len/8 to seq_len words (what packing is for), rows filled by bfd packing
        full, varied = root / "full.jsonl", root / "varied.jsonl"
        write_data(full, n_examples, args.seq_len)
        write_data(varied, n_examples * 4, (max(1, args.seq_len // 8), args.seq_len))
        for config in configs:
            lora, packing = config.startswith("lora"), config.endswith("packed")
            data = varied if packing else full
            kw = dict(batch_size=args.batch_size, seq_len=args.seq_len, lora=lora, packing=packing,
                      gradient_checkpointing=args.gradient_checkpointing)
            run(model, data, root / f"{config}-warmup", steps=args.warmup_steps, **kw)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            metrics = run(model, data, root / f"{config}-measured", steps=args.steps, **kw)
            tokens_per_s = float(metrics["tokens_per_second"])
            fpt = flops_per_token(params, lora_params, lora)
            results[config] = {
                "data": "varied lengths, packed" if packing else "full-length rows, no padding",
                "steps": int(metrics["global_step"]),
                "train_runtime_s": round(float(metrics["train_runtime_s"]), 3),
                "tokens_per_s": round(tokens_per_s, 1),
                "flops_per_token": fpt,
                "model_tflops_per_s": round(fpt * tokens_per_s / 1e12, 4),
                "mfu": round(fpt * tokens_per_s / (peak * 1e12), 6 if args.dry_run else 4),
                "max_memory_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None,
            }
            print(f"[gpu_mfu] {config}: {results[config]['tokens_per_s']} tokens/s, MFU {results[config]['mfu']}",
                  file=sys.stderr, flush=True)

    report = {
        "dry_run": args.dry_run,
        "device": device_name,
        "accelerator": accelerator,
        "peak_bf16_tflops": peak,
        "peak_source": peak_source,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": attn,
        "model": {"n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "vocab": VOCAB},
        "params": params,
        "lora": LORA | {"target_modules": "auto", "trainable_params": lora_params},
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "gradient_checkpointing": args.gradient_checkpointing,
        "configs": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
