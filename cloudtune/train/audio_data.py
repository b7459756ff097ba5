"""text-to-audio data: clips decoded with soundfile, resampled to the codec's rate, encoded once into EnCodec codes
and T5 text states (cached per node), then laid out in MusicGen's delay pattern.

Shapes: a clip piece is `(channels, samples)` float32 at the codec rate; its codes `(K, T)` (K = the decoder's
`num_codebooks`, T = codec frames); its labels `(T + K - 1, K)`; its text states `(L, H)` (L tokens, H the text
encoder's hidden size). The delay pattern is built by the decoder's own `build_delay_pattern_mask` (transformers'
modeling_musicgen) on the codes with the decoder start token in front, with `max_length = T + K`: codebook k holds
k + 1 start/pad tokens, then its T codes, then K - 1 - k pads. The model's forward shifts the labels right itself
(`shift_tokens_right` with `decoder_start_token_id`) and ignores labels equal to the pad token, so the labels are
that pattern without its first column: exactly what `generate` produces and then strips.

Encoding is exact to precompute: the text encoder and the codec are frozen and run in eval mode (no dropout).
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.data.audio import Clip, clip_pieces, read_info
from cloudtune.errors import JobInputError

CACHE_VERSION = "2"


def resample(audio: Any, rate: int, target: int) -> Any:
    """`audio` (channels, samples) float32 from `rate` to `target` Hz by band-limited (FFT) resampling, the method of
    scipy.signal.resample, in numpy alone. Returns a new float32 array."""
    import numpy as np

    if rate == target:
        return np.asarray(audio, dtype=np.float32)
    n = audio.shape[-1]
    m = max(1, int(round(n * target / rate)))
    spectrum = np.fft.rfft(audio, axis=-1)
    keep = min(spectrum.shape[-1], m // 2 + 1)
    out = np.zeros(audio.shape[:-1] + (m // 2 + 1,), dtype=spectrum.dtype)
    out[..., :keep] = spectrum[..., :keep]
    return (np.fft.irfft(out, n=m, axis=-1) * (m / n)).astype(np.float32)


def to_channels(audio: Any, channels: int) -> Any:
    """(c, samples) -> (channels, samples): a mix down to mono (mean), or mono repeated for stereo."""
    import numpy as np

    if audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    return np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)


def read_pieces(clip: Clip, rate: int, channels: int, max_seconds: float, min_seconds: float) -> list[Any]:
    """The clip's pieces (see cloudtune.data.audio.clip_pieces), each (channels, samples) at `rate` Hz."""
    import numpy as np
    import soundfile as sf

    info = read_info(clip.path)
    pieces = []
    for start, stop in clip_pieces(info.frames, info.rate, max_seconds, min_seconds):
        data, file_rate = sf.read(str(clip.path), start=start, stop=stop, dtype="float32", always_2d=True)
        audio = np.ascontiguousarray(data.T)  # (channels, samples)
        pieces.append(resample(to_channels(audio, channels), file_rate, rate))
    return pieces


def model_fingerprint(model: Any) -> str:
    """A digest of what encoding depends on: the text encoder's and codec's configs and weights (blake2b of their
    bytes; a few hundred MB for MusicGen's T5-base, under a second)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for part in (model.text_encoder, model.audio_encoder):
        digest.update(part.config.to_json_string().encode())
        for name, tensor in sorted(part.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_root() -> Path:
    """Where encoded examples are kept on this node: CLOUDTUNE_AUDIO_CACHE, else beside 🤗 Datasets' cache
    (HF_DATASETS_CACHE; ~/.cache/huggingface/datasets), which a restarted job on the same node finds again."""
    explicit = os.environ.get("CLOUDTUNE_AUDIO_CACHE")
    if explicit:
        return Path(explicit)
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "cloudtune-text-to-audio"


@dataclass
class Encoder:
    """Runs the frozen text encoder and codec of a MusicGen model (`model`, `processor`) on CPU or the training
    device; caches each piece's codes and text states under `cache` keyed by `fingerprint`."""

    model: Any
    processor: Any
    cache: Path
    fingerprint: str

    def codes(self, audio: Any) -> Any:
        """EnCodec codes (K, T) of `audio` (channels, samples) at the codec rate; stereo: each channel encoded
        alone and their codebooks interleaved (left, right, left, ...), as MusicGen stereo generates them."""
        import torch

        codec, decoder = self.model.audio_encoder, self.model.decoder.config
        device = next(codec.parameters()).device
        rows = []
        with torch.no_grad():
            for channel in range(audio.shape[0]):
                x = torch.from_numpy(audio[channel : channel + 1][None]).to(device)
                rows.append(codec.encode(x).audio_codes[0, 0])  # (codebooks, T): one frame (chunking off)
        codes = rows[0] if len(rows) == 1 else torch.stack(rows, dim=1).reshape(-1, rows[0].shape[-1])
        if codes.shape[0] != decoder.num_codebooks:
            raise JobInputError(f"the model's codec gives {codes.shape[0]} codebooks but its decoder predicts "
                                f"{decoder.num_codebooks}: the MusicGen checkpoint is inconsistent (audio_encoder "
                                f"target_bandwidths vs decoder num_codebooks)")
        return codes.to("cpu", torch.long)

    def text_states(self, text: str) -> Any:
        """The text encoder's last hidden states (L, H) float32 for `text` (the tokenizer's special tokens added)."""
        import torch

        encoder = self.model.text_encoder
        tokens = self.processor.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
        device = next(encoder.parameters()).device
        with torch.no_grad():
            states = encoder(input_ids=tokens.input_ids.to(device),
                             attention_mask=tokens.attention_mask.to(device)).last_hidden_state[0]
        return states.to("cpu", torch.float32)

    def example(self, clip: Clip, piece: int, audio: Any, digest: str) -> dict[str, Any]:
        """{codes, text_states} of one piece, from the cache when there."""
        from safetensors.torch import load_file, save_file

        # the piece's index and shape (channels, samples at the codec's rate) name its span of the file exactly:
        # pieces of one length start at index x length (cloudtune.data.audio.clip_pieces), whatever max_seconds made them
        key = hashlib.blake2b(f"{CACHE_VERSION}|{self.fingerprint}|{digest}|{piece}|{tuple(audio.shape)}|{clip.text}"
                              .encode(), digest_size=16).hexdigest()
        path = self.cache / f"{key}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))
            except Exception:  # noqa: BLE001 (a torn file from a killed writer: encode again)
                pass
        out = {"codes": self.codes(audio), "text_states": self.text_states(clip.text or "")}
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(out, str(tmp))
        os.replace(tmp, path)  # node-local disk: the rename makes it whole
        return out


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def delay_labels(decoder: Any, codes: Any) -> Any:
    """Labels (T + K - 1, K) for codes (K, T): the decoder's delay pattern (see the module docstring)."""
    import torch

    config = decoder.config
    k, t = codes.shape
    start = torch.full((k, 1), config.decoder_start_token_id, dtype=torch.long)
    _, pattern = decoder.build_delay_pattern_mask(torch.cat([start, codes], dim=1), pad_token_id=config.pad_token_id,
                                                  max_length=t + k)
    return pattern.reshape(k, t + k)[:, 1:].T.contiguous()


class AudioDataset:
    """Map-style dataset of encoded pieces: {labels (T+K-1, K) long, text_states (L, H) float32, drop bool}.

    `drop` says whether the piece's description becomes the null condition this time (classifier-free-guidance
    dropout, probability `dropout`): a pure function of (seed, epoch, index), like the image recipe's random choices
    (`cloudtune.train.image_data.choices`), so a run resumed from a checkpoint draws what the uninterrupted run drew
    whatever the dataloader collated ahead. `epoch` (0-based) is set by `cloudtune.train.callbacks.EpochCallback`."""

    def __init__(self, examples: list[dict[str, Any]], dropout: float = 0.0, seed: int = 0) -> None:
        self.examples = examples
        self.dropout = dropout
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        drop = self.dropout > 0 and random.Random(f"{self.seed}:{self.epoch}:{i}").random() < self.dropout
        return {**self.examples[i], "drop": drop}


def encode_clips(clips: list[Clip], encoder: Encoder, decoder: Any, audio_spec: Any) -> tuple[AudioDataset, float]:
    """Every clip's pieces encoded (cached); returns (dataset, seconds of audio)."""
    config = encoder.model.config
    rate = config.audio_encoder.sampling_rate
    channels = config.decoder.audio_channels
    examples, seconds = [], 0.0
    for clip in clips:
        digest = file_digest(clip.path)
        for i, audio in enumerate(read_pieces(clip, rate, channels, audio_spec.max_seconds, audio_spec.min_seconds)):
            encoded = encoder.example(clip, i, audio, digest)
            seconds += audio.shape[-1] / rate
            examples.append({"labels": delay_labels(decoder, encoded["codes"]), "text_states": encoded["text_states"]})
    return AudioDataset(examples), seconds


class AudioCollator:
    """Batches of {labels (B, T_max, K) with -100 beyond each row, encoder_outputs ((B, L_max, H),),
    attention_mask (B, L_max)}; a row whose feature has `drop` set gets the null condition (its attention mask all
    zeros, which zeroes its text states in the forward: the unconditional input MusicGen's generate uses for
    classifier-free guidance). The draws are the dataset's (`AudioDataset`), never a generator's."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        b = len(features)
        longest = max(f["labels"].shape[0] for f in features)
        k = features[0]["labels"].shape[1]
        labels = torch.full((b, longest, k), -100, dtype=torch.long)
        text_len = max(f["text_states"].shape[0] for f in features)
        hidden = features[0]["text_states"].shape[1]
        states = torch.zeros((b, text_len, hidden), dtype=torch.float32)
        mask = torch.zeros((b, text_len), dtype=torch.long)
        for row, f in enumerate(features):
            labels[row, : f["labels"].shape[0]] = f["labels"]
            states[row, : f["text_states"].shape[0]] = f["text_states"]
            if not f.get("drop", False):
                mask[row, : f["text_states"].shape[0]] = 1
        real = ((labels != -100) & (labels != self.pad_token_id)).sum()
        return {"labels": labels, "encoder_outputs": (states,), "attention_mask": mask, "ct_num_tokens": real}
