"""Make the offline example's tiny MusicGen and its clips: nothing is downloaded.

    python make_tiny_model.py [OUT_DIR]    # writes OUT_DIR/tiny-musicgen and OUT_DIR/clips (default: this folder)

The model is composed the way transformers' own MusicGen tests compose one: a `MusicgenConfig` of a tiny T5 text
encoder, a tiny EnCodec (8 kHz, 160 samples a frame: 50 frames a second, 4 codebooks of 64 codes) and a tiny decoder
whose `num_codebooks` equals the EnCodec's codebook count, with random weights (fixed seed), a word-level
tokenizer built with `tokenizers`, and the MusicGen processor; all saved with `save_pretrained`. The clips are sine
tones (`audiofolder` layout: WAV files + metadata.jsonl with `file_name` and `text`), described by their pitch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SAMPLING_RATE = 8000  # Hz
HOP = 160  # samples per codec frame (8 * 5 * 4): 50 frames a second, as MusicGen's 32 kHz EnCodec
CODEBOOKS = 4
CODEBOOK_SIZE = 64  # 6 bits: 4 codebooks x 50 frames x 6 bits = 1.2 kbps
PITCHES = {"low": 220.0, "middle": 440.0, "high": 880.0, "very high": 1320.0}
WORDS = ["a", "an", "sine", "tone", "pitch", "low", "middle", "high", "very", "note", "calm", "bright", "music"]


def tiny_tokenizer() -> object:
    """A T5 tokenizer (Unigram, pad 0, eos 1, unk 2) over a dozen words, made here without sentencepiece: the
    tokenizer class MusicgenProcessor expects."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_tiny_musicgen(path: Path, seed: int = 0) -> Path:
    """Save the tiny MusicGen (model, generation config, processor) to `path`; return `path`."""
    import torch
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    text = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    codec = EncodecConfig(sampling_rate=SAMPLING_RATE, audio_channels=1, hidden_size=16, num_filters=4,
                          upsampling_ratios=[8, 5, 4], codebook_size=CODEBOOK_SIZE, codebook_dim=16,
                          target_bandwidths=[CODEBOOKS * (SAMPLING_RATE // HOP) * math.log2(CODEBOOK_SIZE) / 1000],
                          num_lstm_layers=1, compress=1, chunk_length_s=None, overlap=None)
    assert codec.num_quantizers == CODEBOOKS, codec.num_quantizers
    decoder = MusicgenDecoderConfig(vocab_size=CODEBOOK_SIZE, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, ffn_dim=64, max_position_embeddings=512,
                                    num_codebooks=CODEBOOKS, pad_token_id=CODEBOOK_SIZE,
                                    bos_token_id=CODEBOOK_SIZE, decoder_start_token_id=CODEBOOK_SIZE,
                                    tie_word_embeddings=False)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config)
    init_codebooks(model.audio_encoder)
    generation = model.generation_config
    generation.pad_token_id = generation.decoder_start_token_id = generation.bos_token_id = CODEBOOK_SIZE
    generation.do_sample, generation.guidance_scale, generation.max_length = True, 3.0, 256
    model.save_pretrained(str(path))
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0)
    MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(str(path))
    return path


def init_codebooks(codec: object) -> None:
    """Give the codec's residual quantizer codebooks that tell sounds apart (a fresh EnCodec's codebooks are zeros, so
    every frame would get code 0): each codebook's entries are residual latent frames of tones from 100 Hz to 2 kHz
    (what k-means would start from)."""
    import torch

    rate = codec.config.sampling_rate
    with torch.no_grad():
        tones = torch.stack([torch.tensor(sine(f, 0.5, rate, a), dtype=torch.float32)
                             for f in torch.linspace(100, 2000, 16).tolist() for a in (0.2, 0.6)])
        residual = codec.encoder(tones[:, None, :]).transpose(1, 2).reshape(-1, codec.config.codebook_dim)
        for layer in codec.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(residual[torch.randperm(len(residual))[: book.embed.shape[0]]])
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)
            residual = residual - book.embed[torch.cdist(residual, book.embed).argmin(-1)]


def sine(frequency: float, seconds: float, rate: int = SAMPLING_RATE, amplitude: float = 0.5) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * frequency * i / rate) for i in range(int(seconds * rate))]


def make_clips(path: Path, per_pitch: int = 3, seconds: float = 2.0) -> Path:
    """Write sine-tone WAV clips (16-bit PCM, 8 kHz mono) and metadata.jsonl (`file_name`, `text`) to `path`."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, frequency in PITCHES.items():
        for i in range(per_pitch):
            file_name = f"{name.replace(' ', '_')}_{i}.wav"
            tone = np.asarray(sine(frequency * (1 + 0.01 * i), seconds), dtype=np.float32)
            sf.write(str(path / file_name), tone, SAMPLING_RATE, subtype="PCM_16")
            rows.append({"file_name": file_name, "text": f"a {name} pitch sine tone"})
    (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    print("model:", make_tiny_musicgen(out / "tiny-musicgen"))
    print("clips:", make_clips(out / "clips"))
