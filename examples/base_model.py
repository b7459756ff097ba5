"""The base model of the LoRA and classification examples, made offline (each example's prepare.py calls `main`).

Reuses the quickstart's pretrained tiny GPT-2 (examples/quickstart/models/tiny-gpt2, made by
examples/quickstart/prepare.py) when it is there: it is copied to models/base. Otherwise a small GPT-2 is built in
a few seconds: a byte-level BPE tokenizer trained on the example's data and a freshly initialised 2-layer model.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

QUICKSTART_MODEL = Path(__file__).resolve().parent / "quickstart" / "models" / "tiny-gpt2"
SPECIAL = "<|endoftext|>"


def build_tiny_gpt2(out: Path, texts: list[str], seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL,
                                        pad_token=SPECIAL, model_max_length=256)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def main(here: Path, texts: Callable[[], list[str]], argv: list[str] | None = None) -> int:
    """The prepare.py of an example in `here`: its base model into `here/models/base`."""
    parser = argparse.ArgumentParser(description="Get this example's base model, offline, into models/base.")
    parser.add_argument("--out", type=Path, default=here / "models" / "base")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    parser.add_argument("--own", action="store_true", help="build the small model here even if the quickstart's exists")
    args = parser.parse_args(argv)
    if (args.out / "config.json").is_file() and not args.force:
        print(f"model already at {args.out}; nothing to do (use --force to rebuild)")
        return 0
    if args.out.exists():
        shutil.rmtree(args.out)
    if (QUICKSTART_MODEL / "config.json").is_file() and not args.own:
        shutil.copytree(QUICKSTART_MODEL, args.out)
        print(f"copied the quickstart's model {QUICKSTART_MODEL} to {args.out}")
    else:
        args.out.mkdir(parents=True)
        build_tiny_gpt2(args.out, texts())
        print(f"built a small GPT-2 (random init, tokenizer trained on data/) in {args.out}")
    print(f"next: cloudtune launch {here.relative_to(Path.cwd()) if here.is_relative_to(Path.cwd()) else here}/job.yaml")
    return 0
