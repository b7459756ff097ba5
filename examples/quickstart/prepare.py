"""Build the quickstart's base model offline: a small GPT-2 pretrained briefly on general text.

    python examples/quickstart/prepare.py          # skips if models/tiny-gpt2 exists
    python examples/quickstart/prepare.py --force  # rebuild

Steps: train a byte-level BPE tokenizer on data/general.txt + the domain text, build a 4-layer GPT-2 from a
config, pretrain it for a short while on data/general.txt only (fixed seed, CPU), and save it with
save_pretrained to models/tiny-gpt2. Nothing is downloaded. Fine-tuning on the domain manual
(`cloudtune launch examples/quickstart/job.yaml`) should then cut its eval loss sharply.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
DEFAULT_OUT = HERE / "models" / "tiny-gpt2"
SPECIAL = "<|endoftext|>"


def read_lines() -> tuple[list[str], list[str]]:
    general = [ln.strip() for ln in (DATA / "general.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    domain = [json.loads(ln)["text"] for ln in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    return general, domain


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL,
        model_max_length=256,
    )


def pretrain(model, tokenizer, texts: list[str], *, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
    import torch

    eos = tokenizer.eos_token_id
    encoded = [ids + [eos] for ids in tokenizer(texts, truncation=True, max_length=127)["input_ids"]]
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps)
    )
    model.train()
    losses: list[float] = []
    order: list[int] = []
    started = time.monotonic()
    for step in range(steps):
        if len(order) < batch_size:
            order = list(range(len(encoded)))
            rng.shuffle(order)
        batch = [encoded[order.pop()] for _ in range(batch_size)]
        longest = max(map(len, batch))
        ids = torch.full((batch_size, longest), eos, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            left = (time.monotonic() - started) / (step + 1) * (steps - step - 1)
            print(f"  pretrain step {step + 1}/{steps} loss={loss.item():.3f} eta {left:.0f} s", flush=True)
    model.eval()
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save the model")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    parser.add_argument("--steps", type=int, default=400, help="pretraining steps on general.txt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if (args.out / "config.json").is_file() and not args.force:
        print(f"model already at {args.out}; nothing to do (use --force to rebuild)")
        return 0

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, set_seed

    started = time.time()
    set_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    general, domain = read_lines()
    print(f"[1/3] training a tokenizer ({args.steps} pretraining steps follow; about a minute on 2 CPU cores)", flush=True)
    tokenizer = build_tokenizer(general + domain, vocab_size=2048)
    print(f"tokenizer: byte-level BPE, {len(tokenizer)} tokens, trained on {len(general)} general + {len(domain)} domain lines")

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=256, n_layer=4, n_head=8,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    print("[2/3] building the model from a config", flush=True)
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: GPT-2, {config.n_layer} layers, n_embd {config.n_embd}, {n_params / 1e6:.2f}M parameters")

    print(f"[3/3] pretraining on data/general.txt only ({len(general)} lines, {args.steps} steps, seed {args.seed})")
    losses = pretrain(model, tokenizer, general, steps=args.steps, batch_size=16, lr=2e-3, seed=args.seed)
    tail = losses[-20:]
    print(f"pretraining done: final loss {sum(tail) / len(tail):.3f} (perplexity {math.exp(sum(tail) / len(tail)):.1f})")

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    tokenizer.save_pretrained(str(args.out))
    print(f"saved to {args.out} in {time.time() - started:.1f} s")
    print("next: cloudtune launch examples/quickstart/job.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
