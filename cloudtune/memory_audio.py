"""The memory estimate's model facts for MusicGen (task text-to-audio), from its composite config.json.

What trains is the decoder: `config.decoder` gives its sizes (hidden_size, num_hidden_layers, num_attention_heads,
ffn_dim, vocab_size, num_codebooks). Each decoder layer (transformers' MusicgenDecoderLayer) holds self-attention
(q/k/v/out_proj, h x h), cross-attention (the same four) and fc1/fc2 (h x ffn_dim); GELU, LayerNorm. The output
is `num_codebooks` heads over `vocab_size` codes. The text encoder (T5) and the codec (EnCodec) are frozen: their
weights count, never their gradients or optimizer states. A clip of `max_seconds` is max_seconds x frame rate
codec frames (frame rate = sampling_rate / prod(upsampling_ratios): 50 Hz for MusicGen's 32 kHz EnCodec), plus
num_codebooks - 1 steps of the delay pattern: the decoder's sequence length.

Pure arithmetic: no torch, no transformers.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloudtune.memory import ModelFacts, Setup, hub_cache_dir, safetensors_shapes

DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj")

# the published config.json sizes of MusicGen's checkpoints (Hugging Face Hub), for hub ids not cached here:
# (hidden, layers, heads); every one has ffn_dim = 4 x hidden, 4 codebooks of 2048 codes and T5-base as text encoder
KNOWN_MUSICGEN = {"facebook/musicgen-small": (1024, 24, 16), "facebook/musicgen-medium": (1536, 48, 24),
                  "facebook/musicgen-large": (2048, 48, 32)}
T5_BASE = {"d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12, "d_kv": 64, "vocab_size": 32128}
ENCODEC_32KHZ = {"sampling_rate": 32000, "upsampling_ratios": [8, 5, 4, 4]}


def t5_encoder_params(t5: dict[str, Any]) -> int:
    """Parameters of a T5 encoder: embeddings, per layer attention (4 x d x heads*d_kv) and MLP (2 x d x d_ff)."""
    d, inner = int(t5.get("d_model", 512)), int(t5.get("num_heads", 8)) * int(t5.get("d_kv", 64))
    per_layer = 4 * d * inner + 2 * d * int(t5.get("d_ff", 2048)) + 2 * d
    return int(t5.get("vocab_size", 32128)) * d + int(t5.get("num_layers", 6)) * per_layer + d


def frame_rate(codec: dict[str, Any]) -> float:
    """Codec frames a second: sampling rate over the product of the upsampling ratios (EnCodec's hop)."""
    return int(codec.get("sampling_rate", 32000)) / math.prod(codec.get("upsampling_ratios") or [8, 5, 4, 4])


def musicgen_facts(config: dict[str, Any], source: str, tensors: dict[str, tuple[int, ...]] | None = None) -> ModelFacts | None:
    """ModelFacts of a MusicGen config.json dict (`tensors`: the weight files' shapes, making the counts exact)."""
    dec = config.get("decoder")
    if not isinstance(dec, dict):
        return None
    h, layers, heads = int(dec.get("hidden_size", 0)), int(dec.get("num_hidden_layers", 0)), int(dec.get("num_attention_heads", 0))
    if not (h > 0 and layers > 0 and heads > 0):
        return None
    ffn, vocab, books = int(dec.get("ffn_dim", 4 * h)), int(dec.get("vocab_size", 2048)), int(dec.get("num_codebooks", 4))
    layer = [(n, h, h) for n in DECODER_LINEARS] * 2 + [("fc1", h, ffn), ("fc2", ffn, h)]
    linears = tuple(layer * layers)
    if tensors:
        params = sum(math.prod(s) for s in tensors.values())
        frozen = sum(math.prod(s) for n, s in tensors.items() if n.startswith(("text_encoder.", "audio_encoder.")))
    else:
        decoder = sum(i * o for _, i, o in linears) + books * (vocab + 1) * h + books * vocab * h + (2 * layers + 1) * h
        frozen = t5_encoder_params(config.get("text_encoder") or T5_BASE)  # the codec's weights are not counted
        params = decoder + frozen
    return ModelFacts(params=params, hidden=h, layers=layers, heads=heads, kv_heads=heads, head_dim=h // heads,
                      intermediate=ffn, vocab=vocab, model_type="musicgen", linears=linears, source=source,
                      dropout=float(dec.get("dropout", 0.0) or 0.0) > 0, frozen_params=frozen, codebooks=books,
                      cross_attention=True)


def known_config(model_id: str) -> dict[str, Any] | None:
    sizes = KNOWN_MUSICGEN.get(model_id.lower())
    if sizes is None:
        return None
    h, layers, heads = sizes
    return {"model_type": "musicgen", "text_encoder": T5_BASE, "audio_encoder": ENCODEC_32KHZ,
            "decoder": {"hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads,
                        "ffn_dim": 4 * h, "vocab_size": 2048, "num_codebooks": 4, "dropout": 0.1}}


def audio_model(model_dir: Path | None, model_id: str | None) -> tuple[ModelFacts, float] | None:
    """(facts, codec frame rate) of a local MusicGen dir or a hub id (its cached config, else KNOWN_MUSICGEN)."""
    config, tensors, source = None, None, ""
    directory = model_dir
    if directory is None and model_id:
        snapshots = hub_cache_dir() / ("models--" + model_id.replace("/", "--")) / "snapshots"
        found = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
        directory = found[-1].parent if found else None
    if directory is not None:
        try:
            config = json.loads((directory / "config.json").read_text(encoding="utf-8-sig"))
            tensors, source = safetensors_shapes(directory), f"config.json of {model_id or directory}"
        except (OSError, ValueError):
            config = None
    if config is None and model_id:
        config, source = known_config(model_id), f"cloudtune's table of {model_id}"
    if not isinstance(config, dict) or config.get("model_type") != "musicgen":
        return None
    facts = musicgen_facts(config, source, tensors)
    return (facts, frame_rate(config.get("audio_encoder") or ENCODEC_32KHZ)) if facts else None


def clip_setup(setup: Setup, facts: ModelFacts, rate: float, max_seconds: float) -> Setup:
    """`setup` with the decoder's sequence length for clips of `max_seconds` (frames + the delay pattern's K - 1)."""
    return replace(setup, seq_len=int(math.ceil(max_seconds * rate)) + facts.codebooks - 1)
