"""Tiny models for tests: built from a config, saved locally, never downloaded."""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a small model learns to repeat simple sentences",
    "roast the beans until the first crack then cool them fast",
    "the boat sails north when the wind comes from the south",
    "numbers like 0 1 2 3 4 5 6 7 8 9 appear in text too",
    "The End. Questions? Answers! {json: [1, 2]} <tags> and_underscores",
]


def _tiny_tokenizer() -> object:
    """A tiny byte-level BPE tokenizer (vocabulary 400) trained on a fixed corpus; EOS = pad = `<|endoftext|>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


def make_tiny_gpt2(path: Path) -> Path:
    """Save a 2-layer GPT-2 (n_embd 32) with a tiny byte-level BPE tokenizer to `path`; return `path`.

    Deterministic (fixed seed) and fast (well under a second once transformers is imported).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def make_tiny_llama(path: Path) -> Path:
    """Save a 2-layer Llama-architecture model (hidden 32, 2 heads, untied head) with the tiny tokenizer to `path`.

    The architecture the PyTorch/XLA lane shards with FSDPv2 (transformers' FSDPv2 output sharding handles its
    CausalLMOutputWithPast; GPT-2's output is not handled). Deterministic (fixed seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def placeholder_weights() -> bytes:
    """The smallest valid safetensors file (one float32 tensor `w` of shape [1]): what a fake model dir's weights hold
    so the plan-time checks (cloudtune.data.modeldir), which refuse an empty weights file, take it for weights."""
    import json

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0\0\0\0"


PLACEHOLDER_TOKENIZER = '{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}'
"""A tokenizer.json the plan-time checks take for one (a JSON object with its tokenizer model)."""
