"""The built-in text-to-audio recipe: fine-tune MusicGen (transformers' `MusicgenForConditionalGeneration`) on
audio clips with descriptions, through the shared training flow (`cloudtune.train.flow.run_training`).

* Model: a Hub id or a local dir holding a MusicGen checkpoint and its processor (MusicGen Melody is a different
  class with chroma conditioning and is refused with the reason). The T5 text encoder and the EnCodec codec stay
  frozen; LoRA (`train.lora`) adapts the decoder's attention and MLP projections; without it the decoder (and the
  text-to-decoder projection) train in full.
* Data (`cloudtune.data.audio`): an audiofolder-style dir or clips with `.txt` descriptions; each piece is encoded
  once into codes and text states (`cloudtune.train.audio_data`, cached per node and reused on resume).
* Samples (`train.validation`, `cloudtune.train.audio_samples`): base model first, every `every_steps`, and at the
  end; the collapse check compares each evaluation's samples with the base model's.
* Outputs: the adapter (or, with `lora.merge` or a full fine-tune, the whole model) and the processor at the model
  dir's root, metrics.json, README.md (how to generate) and samples/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec

DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # MusicgenDecoderLayer's Linear layers


def load_musicgen(source: str, shown: str) -> tuple[Any, Any]:
    """(processor, model) of the MusicGen checkpoint at `source` (local dir or Hub id), in fp32. JobInputError when
    it is not a MusicGen text-to-music checkpoint or cannot be loaded."""
    import torch
    from transformers import AutoConfig, AutoProcessor, MusicgenForConditionalGeneration

    local = Path(source).is_dir()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise JobInputError(f"train.model: cannot read the config of {shown}: {str(exc).splitlines()[0]}; point "
                            f"train.model at a MusicGen checkpoint (e.g. facebook/musicgen-small)") from None
    if config.model_type != "musicgen":
        hint = (" (MusicGen Melody adds chroma conditioning, which this recipe does not train yet)"
                if config.model_type == "musicgen_melody" else "")
        raise JobInputError(f"train.model: {shown} is a {config.model_type!r} model{hint}; task text-to-audio trains "
                            f"MusicGen (model_type musicgen), e.g. facebook/musicgen-small")
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local)
        model = MusicgenForConditionalGeneration.from_pretrained(source, local_files_only=local, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise JobInputError(f"train.model: cannot load {shown}: {str(exc).splitlines()[0]}; check that its files "
                            f"(config, weights, processor and tokenizer) are complete") from None
    return processor, model


def freeze_encoders(model: Any) -> None:
    """The text encoder and the codec never train (their outputs are precomputed)."""
    for part in (model.text_encoder, model.audio_encoder):
        part.requires_grad_(False)
        part.eval()


def lora_targets(model: Any, target_modules: Any) -> str:
    """A peft regex naming the decoder's Linear layers to adapt: `auto` = attention and MLP projections
    (DECODER_TARGETS), else the listed names; JobInputError when none matches."""
    import re

    import torch

    names = list(DECODER_TARGETS) if target_modules == "auto" else list(target_modules)
    pattern = r"^decoder\..*\.(" + "|".join(re.escape(n) for n in names) + r")$"
    found = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.match(pattern, n)]
    if not found:
        raise JobInputError(f"train.lora.target_modules {names} name no Linear layer of the MusicGen decoder; use auto "
                            f"or some of {', '.join(DECODER_TARGETS)}")
    return pattern


def apply_decoder_lora(model: Any, lora: Any) -> Any:
    """The model wrapped by peft with LoRA on the decoder (see `lora_targets`)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora_targets(model, lora.target_modules))
    return get_peft_model(model, config)


def clips_for(ctx: RuntimeContext, train: TrainSpec, name: str) -> list[Any]:
    """The checked clips of input `name` (JobInputError listing every problem, as the preflight does)."""
    from cloudtune.data.audio import clip_problems, find_clips
    from cloudtune.train.models import input_source

    shown = input_source(ctx, name) or name
    clips = find_clips(Path(ctx.inputs[name]), train.data.text_field, shown)
    problems = clip_problems(clips, train.audio.min_seconds, train.data.text_field)
    if problems:
        raise JobInputError(problems[0] if len(problems) == 1 else
                            f"{len(problems)} problems with the clips:\n" + "\n".join(f"  {p}" for p in problems))
    return clips


def prepare_audio_data(ctx: RuntimeContext, train: TrainSpec, model: Any, processor: Any) -> tuple[Any, Any, dict]:
    """(train_ds, eval_ds or None, data_info): the clips encoded with the frozen encoders (node's first process
    first, the others read its cache)."""
    import time

    from cloudtune.train.audio_data import Encoder, cache_root, encode_clips, model_fingerprint
    from cloudtune.train.data import local_main_first

    began = time.monotonic()
    encoder = Encoder(model, processor, cache_root(), model_fingerprint(model))
    sets, info = {}, {}
    with local_main_first():
        for role in ("train", "eval"):
            name = getattr(train.data, role)
            if name is None or name not in ctx.inputs:
                continue
            clips = clips_for(ctx, train, name)
            sets[role], seconds = encode_clips(clips, encoder, model.decoder, train.audio)
            info[f"{role}_clips"], info[f"{role}_seconds"] = len(clips), round(seconds, 2)
    info["train_examples"] = len(sets["train"])
    if "eval" in sets:
        info["eval_examples"] = len(sets["eval"])
    info["prepare_seconds"] = time.monotonic() - began
    return sets["train"], sets.get("eval"), info


def run_text_to_audio(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Fine-tune MusicGen on `ctx.inputs[train.data.train]`; write the model (or adapter), processor, metrics.json,
    README.md and samples/ to ctx.model_dir. Returns the metrics."""
    from transformers import set_seed

    import importlib.util

    from cloudtune.contracts.logfmt import phase
    from cloudtune.contracts.logfmt import say as _say
    from cloudtune.train.audio_data import AudioCollator
    from cloudtune.train.callbacks import EpochCallback
    from cloudtune.train.flow import quiet_transformers as _quiet_transformers
    from cloudtune.train.flow import run_training
    from cloudtune.train.models import model_shown, resolve_model_source, train_model_name


    if importlib.util.find_spec("soundfile") is None:
        raise JobInputError("task text-to-audio decodes clips with soundfile, which this image lacks; install it in "
                            "the image the job runs (`pip install soundfile`, or cloudtune[train])")
    _quiet_transformers()
    hp = train.hyperparameters
    set_seed(hp.seed)
    source = resolve_model_source(ctx, train.model)
    with phase("loading model", source):
        processor, model = load_musicgen(source, model_shown(ctx, train))
    freeze_encoders(model)
    device = _device()
    model.to(device)
    with phase("preparing data", f"input {train.data.train!r} (decode, resample, encode once)"):
        train_ds, eval_ds, info = prepare_audio_data(ctx, train, model, processor)
    _say(f"data: {info['train_clips']} clips ({info['train_seconds']} s) -> {info['train_examples']} training pieces"
         + (f", {info['eval_examples']} eval pieces" if eval_ds is not None else ", no eval set")
         + f" (prepared in {info['prepare_seconds']:.1f} s)")
    if train.lora is not None:
        from cloudtune.train.lora import trainable_summary

        model = apply_decoder_lora(model, train.lora)
        _say(f"LoRA r={train.lora.r} alpha={train.lora.alpha} on the decoder: " + trainable_summary(model))
    book, callbacks = _samples(ctx, train, processor, model)
    if book is not None:  # the base model's samples, before any weight changes (a resumed run makes them again)
        from cloudtune.train.audio_samples import sample_at

        sample_at(book, model, processor, 0, _say, label="base")

    def arguments(args: Any) -> Any:
        args.label_names = ["labels"]  # a peft wrapper hides the forward's `labels` from the Trainer's lookup
        return args

    train_ds.dropout, train_ds.seed = train.audio.description_dropout, hp.seed  # the eval set keeps every description
    callbacks = [*callbacks, EpochCallback(train_ds)]
    collator = AudioCollator(model.config.decoder.pad_token_id)
    # the Trainer gets the feature extractor, not the processor: given a tokenizer or processor it "aligns" the
    # model's special tokens with the tokenizer's (transformers 5.25 trainer_utils.align_special_tokens), which
    # fails on MusicGen's two text configs and would give the decoder T5's pad id; the processor is saved below
    metrics = run_training(ctx, train, checkpoint, processing_class=processor.feature_extractor, model=model,
                           train_ds=train_ds, eval_ds=eval_ds, collator=collator,
                           base_model=train_model_name(train, source, ctx), data_info=info, callbacks=callbacks,
                           trainer_base=_trainer_base(), make_arguments=arguments)
    from accelerate import PartialState

    if PartialState().is_main_process:
        processor.save_pretrained(str(ctx.model_dir))
    if book is not None:
        _finish_samples(ctx, book, model, processor, int(metrics.get("global_step", 0)), metrics)
    return metrics


def _device() -> str:
    from cloudtune.train.flow import device_type

    kind = device_type()
    if kind == "xla":
        raise JobInputError("task text-to-audio does not run on PyTorch/XLA (TPU) yet; use a GPU accelerator")
    if kind == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def _trainer_base() -> type:
    """The Trainer subclass the shared flow combines with cloudtune's: MusicGen averages its loss over the batch's
    label tokens itself, so the Trainer must not pass `num_items_in_batch` and must scale the loss for gradient
    accumulation (model_accepts_loss_kwargs False)."""
    from transformers import Trainer

    class MusicgenTrainer(Trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False

    return MusicgenTrainer


def _samples(ctx: RuntimeContext, train: TrainSpec, processor: Any, model: Any) -> tuple[Any, tuple]:
    """(sample book or None, callbacks) for `train.validation`."""
    if train.validation is None:
        return None, ()
    import os

    from cloudtune.contracts.logfmt import say as _say
    from cloudtune.train.arguments import report_targets
    from cloudtune.train.audio_samples import SampleBook, make_samples_callback

    tensorboard = "tensorboard" in report_targets(train.report_to, os.environ)
    book = SampleBook(train.validation, Path(ctx.checkpoint_dir) / "samples", model.config.audio_encoder.sampling_rate,
                      Path(ctx.log_dir) if tensorboard else None,
                      check_collapse=train.validation.collapse and train.health.collapse is not False)
    return book, (make_samples_callback(book, processor, train.validation.every_steps, _say),)


def _finish_samples(ctx: RuntimeContext, book: Any, model: Any, processor: Any, step: int,
                    metrics: dict[str, float]) -> None:
    """The end's samples, copied with the others to the model dir; their spread joins metrics.json."""
    from accelerate import PartialState

    from cloudtune.contracts.logfmt import say as _say
    from cloudtune.train.audio_samples import sample_at

    sample_at(book, model, processor, step, _say, label=f"step-{step:06d}")
    if PartialState().is_main_process:
        book.publish(Path(ctx.model_dir), step)
        metrics["samples_spread_base"] = float(book.base_spread or 0.0)
        metrics["samples_spread_final"] = float(book.last_spread or 0.0)
        metrics["samples_collapse_warnings"] = len(book.warnings)
        path = Path(ctx.model_dir) / "metrics.json"
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
