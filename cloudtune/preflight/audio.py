"""The deep check of a text-to-audio job (`cloudtune validate --deep`, and a local launch): the MusicGen processor
and model skeleton (on the meta device: no weights read) load, the codec's codebook count equals the decoder's,
and the LoRA target modules name decoder layers. transformers is imported inside (the deep check needs it)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cloudtune.errors import JobInputError

if TYPE_CHECKING:
    from cloudtune.spec import TrainSpec

DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def model_type_problem(model_type: Any, shown: str) -> str | None:
    """The one line for a base model that is not MusicGen (its config's model_type), or None."""
    if model_type == "musicgen":
        return None
    return (f"train.model: {shown} is a {model_type!r} model; task text-to-audio trains MusicGen (model_type musicgen). "
            f"To fix: name a MusicGen checkpoint, e.g. facebook/musicgen-small, or a directory it was saved to")


def musicgen_skeleton(source: str, shown: str, train: "TrainSpec", local_only: bool) -> list[str]:
    """Notes on what was checked; JobInputError (one line) on the first problem."""
    import torch
    from transformers import AutoConfig, AutoProcessor, MusicgenForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        problem = model_type_problem(config.model_type, shown)
        if problem:
            raise JobInputError(problem)
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
    except JobInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad files
        raise JobInputError(f"train.model: cannot load the config and processor of {shown}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    codec, decoder = config.audio_encoder, config.decoder
    books = int(1000 * codec.target_bandwidths[0] // (codec.frame_rate * math.log2(codec.codebook_size)))
    per_channel = decoder.num_codebooks // decoder.audio_channels
    if min(books, codec.num_quantizers) != per_channel:
        raise JobInputError(f"train.model: the codec of {shown} gives {books} codebooks but its decoder predicts "
                            f"{per_channel} per channel: the checkpoint is inconsistent")
    with torch.device("meta"):
        model = MusicgenForConditionalGeneration(config)
    notes = [f"model {shown}: MusicGen processor and skeleton loaded ({decoder.num_codebooks} codebooks, "
             f"{codec.sampling_rate} Hz, {decoder.audio_channels} channel(s))"]
    if train.lora is not None:
        names = list(DECODER_LINEARS) if train.lora.target_modules == "auto" else list(train.lora.target_modules)
        found = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if n.startswith("decoder.") and isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names})
        if not found:
            raise JobInputError(f"train.lora.target_modules {names} name no Linear layer of the MusicGen decoder; use "
                                f"auto or some of {', '.join(DECODER_LINEARS)}")
        notes.append(f"LoRA target modules (decoder): {', '.join(found)}")
    return notes + [f"processor: {type(processor).__name__}"]


