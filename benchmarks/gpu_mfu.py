"""Model FLOPs utilisation of cloudtune's causal-LM recipe on one CUDA GPU.

    python benchmarks/gpu_mfu.py [--size 350M] [--steps 30] [--warmup-steps 5] [--batch-size 8] [--seq-len 1024]
                                 [--peak-tflops T]

Builds a GPT-2-style model of the chosen size from a config (never downloaded; the tokenizer is the tests' tiny
byte-level BPE, the embedding keeps GPT-2's 50,304-row vocabulary), then trains it with the recipe itself
(`cloudtune.train.causal_lm.run_causal_lm`: bf16 autocast with fp32 master weights, AdamW, the recipe's Trainer
arguments) on full-length sequences (no padding): first `--warmup-steps` steps (CUDA context, kernel selection,
allocator), then `--steps` steps that are measured with the recipe's own clock (`train_runtime`) and token count
(non-padding input tokens).

    MFU = 6 * params * tokens/s / peak bf16 FLOP/s

params counts every trainable parameter (tied embeddings once); the 6N rule leaves out attention's
O(seq_len^2) FLOPs, so this MFU is a slight under-estimate at long sequence lengths. The peak is the catalog's
dense bf16 figure for the GPU (`cloudtune.catalog.load_catalog().peak_bf16_tflops(name)`, the name matched from
`torch.cuda.get_device_name()`), or `--peak-tflops`.

Prints one JSON object. Needs a CUDA GPU with bf16; on a machine without one it exits with status 2 and says so.
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


def run(model: Path, data: Path, work: Path, *, steps: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train.causal_lm import run_causal_lm

    ctx = RuntimeContext.single_process(work, {"train": data}, job_name="gpu-mfu")
    train = TrainSpec.model_validate({
        "model": str(model), "data": {"train": "train", "eval": None},
        "hyperparameters": {"epochs": 1000, "max_steps": steps, "learning_rate": 1e-4, "batch_size": batch_size,
                            "max_seq_len": seq_len, "seed": 42},
    })
    return run_causal_lm(ctx, train, CheckpointSpec(every_steps=steps + 1000, keep=1))


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
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (default: from the catalog)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        fail("no CUDA GPU is visible (torch.cuda.is_available() is False); this benchmark measures MFU on a GPU "
             "and does not run on CPU. Run it on a CUDA machine with a CUDA build of torch.")
    if not torch.cuda.is_bf16_supported():
        fail(f"{torch.cuda.get_device_name()} has no bf16 support; the recipe trains in bf16 only where it is supported")

    device_name = torch.cuda.get_device_name()
    total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    accelerator = match_accelerator(device_name, total_gb)
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak-tflops"
    else:
        from cloudtune.catalog import load_catalog

        peak = load_catalog().peak_bf16_tflops(accelerator) if accelerator else None
        peak_source = f"catalog ({accelerator})"
        if not peak:
            fail(f"no catalog bf16 peak for {device_name!r} (matched: {accelerator}); pass --peak-tflops")

    n_embd, n_layer, n_head = SIZES[args.size]
    n_embd, n_layer, n_head = args.n_embd or n_embd, args.n_layer or n_layer, args.n_head or n_head

    import transformers

    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="cloudtune-mfu-") as tmp:
        root = Path(tmp)
        model = build_model(root / "gpt2", n_embd, n_layer, n_head, args.seq_len)
        params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model).parameters())
        n_examples = args.batch_size * 16
        # every example is longer than seq_len tokens, so every batch is full (no padding) after truncation
        import random

        rng = random.Random(0)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(args.seq_len))}) + "\n"
                                for _ in range(n_examples)))
        run(model, data, root / "warmup", steps=args.warmup_steps, batch_size=args.batch_size, seq_len=args.seq_len)
        torch.cuda.reset_peak_memory_stats()
        metrics = run(model, data, root / "measured", steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len)

    tokens_per_s = float(metrics["tokens_per_second"])
    mfu = 6 * params * tokens_per_s / (peak * 1e12)
    print(json.dumps({
        "device": device_name,
        "accelerator": accelerator,
        "peak_bf16_tflops": peak,
        "peak_source": peak_source,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": {"n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "vocab": VOCAB},
        "params": params,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": int(metrics["global_step"]),
        "train_runtime_s": round(float(metrics["train_runtime_s"]), 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "model_tflops_per_s": round(6 * params * tokens_per_s / 1e12, 2),
        "mfu": round(mfu, 4),
        "max_memory_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
