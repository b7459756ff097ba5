"""text-to-audio's pieces that need no training: the spec's sections and refusals, TensorBoard audio events,
resampling, the memory estimate of MusicGen, and the delay-pattern labels against the model's own generate layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cloudtune.memory import Setup, estimate
from cloudtune.memory_audio import audio_model, clip_setup
from cloudtune.spec import TrainSpec
from cloudtune.contracts.tbevents import EventWriter, read_audio, read_scalars


def train(**extra: object) -> TrainSpec:
    return TrainSpec.model_validate({"task": "text-to-audio", "model": "facebook/musicgen-small", **extra})


def test_validation_and_audio_sections() -> None:
    t = train(validation={"prompts": ["calm piano"], "every_steps": 50, "seeds": [0, 7], "seconds": 8},
              audio={"max_seconds": 10})
    assert t.validation.seconds == 8 and t.audio.min_seconds == 1.0 and t.audio.description_dropout == 0.1
    assert "audio" in t.model_dump() and "validation" in t.model_dump()
    assert "audio" not in train().model_dump() and "validation" not in train().model_dump()  # defaults left out
    assert "seconds" not in train(validation={"prompts": ["x"]}).model_dump()["validation"]


@pytest.mark.parametrize("extra, needle", [
    ({"validation": {"prompts": []}}, "prompts"),
    ({"validation": {"prompts": ["  "]}}, "empty prompt"),
    ({"validation": {"prompts": ["a"], "steps": 30}}, "train.validation.steps applies to task text-to-image only"),
    ({"audio": {"min_seconds": 5, "max_seconds": 2}}, "above max_seconds"),
    ({"data": {"packing": True}}, "train.data.packing does not apply to task text-to-audio"),
    ({"distributed": "fsdp"}, "fsdp is not supported by task text-to-audio"),
])
def test_refusals_name_the_field(extra: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        train(**extra)
    assert needle in str(info.value)


def test_sections_of_other_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="train.validation applies to task text-to-image only"):
        TrainSpec.model_validate({"model": "gpt2", "validation": {"prompts": ["x"]}})
    with pytest.raises(ValueError, match="train.validation.seconds is the length of text-to-audio samples"):
        TrainSpec.model_validate({"task": "text-to-image", "model": "sd", "lora": {"r": 4},
                                  "validation": {"prompts": ["x"], "seconds": 3}})
    with pytest.raises(ValueError, match="train.audio applies to task text-to-audio only"):
        TrainSpec.model_validate({"model": "gpt2", "audio": {"max_seconds": 5}})


def test_tensorboard_audio_round_trip(tmp_path: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, dtype=np.float32), 8000, format="WAV", subtype="PCM_16")
    writer = EventWriter(tmp_path)
    writer.scalars(1, {"train/loss": 2.5})
    writer.audio(2, "samples/p0-s0", buf.getvalue(), 8000, 1, 800)
    writer.close()
    assert read_scalars(writer.path) == [(1, "train/loss", 2.5)]
    [(step, tag, rate, wav)] = read_audio(writer.path)
    assert (step, tag, rate, wav) == (2, "samples/p0-s0", 8000.0, buf.getvalue())


def test_resampling_keeps_the_pitch() -> None:
    from cloudtune.train.audio_data import resample, to_channels

    rate, target, freq = 44100, 32000, 440.0
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)]).astype(np.float32)
    out = resample(to_channels(stereo, 1), rate, target)
    assert out.shape == (1, target)
    peak = np.argmax(np.abs(np.fft.rfft(out[0]))) * target / out.shape[-1]
    assert abs(peak - freq) < 1.5 and abs(np.abs(out).max() - 1.0) < 0.05


def test_memory_estimate_grows_with_clip_length_and_lora_trains_less() -> None:
    facts, rate = audio_model(None, "facebook/musicgen-small")
    assert rate == 50 and facts.codebooks == 4 and facts.frozen_params > 100_000_000
    short = clip_setup(Setup(task="text-to-audio", precision="bf16", batch_size=2), facts, rate, 10)
    long = clip_setup(Setup(task="text-to-audio", precision="bf16", batch_size=2), facts, rate, 30)
    assert (short.seq_len, long.seq_len) == (503, 1503)
    assert estimate(facts, long).total > estimate(facts, short).total
    lora = estimate(facts, clip_setup(Setup(task="text-to-audio", precision="bf16", batch_size=2, lora_r=16), facts, rate, 30))
    full = estimate(facts, long)
    assert lora.trainable_params < full.trainable_params == facts.params - facts.frozen_params
    assert lora.total < full.total


def test_labels_are_the_layout_generate_strips(tmp_path: Path) -> None:
    """The labels' codes, read back through the model's own `apply_delay_pattern_mask` + pad filter (what generate
    does to its output), are the codes again; and the model's loss ignores the pattern's pads."""
    pytest.importorskip("transformers")
    import torch

    from tests.tiny_musicgen import make_tiny_musicgen
    from transformers import MusicgenForConditionalGeneration

    from cloudtune.train.audio_data import delay_labels

    model = MusicgenForConditionalGeneration.from_pretrained(str(make_tiny_musicgen(tmp_path / "m")))
    k, t, pad = 4, 7, model.config.decoder.pad_token_id
    codes = torch.randint(0, 64, (k, t))
    labels = delay_labels(model.decoder, codes)
    assert labels.shape == (t + k - 1, k)
    for book in range(k):  # codebook k: k start/pad tokens (the first column is dropped), T codes, K - 1 - k pads
        column = labels[:, book]
        assert (column[:book] == pad).all() and torch.equal(column[book:book + t], codes[book])
        assert (column[book + t:] == pad).all()
    sequence = torch.cat([torch.full((k, 1), pad), labels.T], dim=1)  # what the model's shift reconstructs
    assert torch.equal(sequence[sequence != pad].reshape(k, t), codes)
