"""A short model card (README.md) for the model dir: base model, data, hyperparameters, final metrics, how to load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


PIPELINE_TAGS = {"seq-classification": "text-classification", "text-to-audio": "text-to-audio"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _audio_loading(train: Any) -> str:
    """How to generate with a text-to-audio (MusicGen) model dir."""
    generate = ("inputs = processor(text=[\"lo-fi piano with soft drums\"], padding=True, return_tensors=\"pt\")\n"
                "audio = model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=256)  # ~5 s\n"
                "rate = model.config.audio_encoder.sampling_rate\n"
                "soundfile.write(\"sample.wav\", audio[0].T.numpy(), rate)\n")
    head = "```python\nimport soundfile\nfrom transformers import AutoProcessor, MusicgenForConditionalGeneration\n"
    if train.lora is None or train.lora.merge:
        note = ("The LoRA adapter is merged into full weights here; the adapter alone is in `adapter/`.\n\n"
                if train.lora is not None else "")
        return (note + head + "\nmodel = MusicgenForConditionalGeneration.from_pretrained(\"path/to/this/dir\")\n"
                "processor = AutoProcessor.from_pretrained(\"path/to/this/dir\")\n" + generate + "```\n")
    return ("This directory holds a LoRA adapter on the MusicGen decoder (needs the base model) and the processor.\n\n"
            + head + "from peft import PeftModel\n\n"
            "base = MusicgenForConditionalGeneration.from_pretrained(\"<base model>\")\n"
            "model = PeftModel.from_pretrained(base, \"path/to/this/dir\")\n"
            "processor = AutoProcessor.from_pretrained(\"path/to/this/dir\")\n" + generate + "```\n")


def _loading(train: Any) -> str:
    if train.task == "text-to-audio":
        return _audio_loading(train)
    cls = "AutoModelForSequenceClassification" if train.task == "seq-classification" else "AutoModelForCausalLM"
    if train.lora is None:
        return (f"```python\nfrom transformers import AutoTokenizer, {cls}\n\n"
                f"model = {cls}.from_pretrained(\"path/to/this/dir\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/dir\")\n```\n")
    peft_cls = "AutoPeftModelForSequenceClassification" if train.task == "seq-classification" else "AutoPeftModelForCausalLM"
    if train.lora.merge:
        return (f"The LoRA adapter is merged into full weights here; the adapter alone is in `adapter/`.\n\n"
                f"```python\nfrom transformers import {cls}\n\n"
                f"model = {cls}.from_pretrained(\"path/to/this/dir\")            # merged\n"
                f"from peft import PeftModel\n"
                f"base = {cls}.from_pretrained(\"<base model>\")\n"
                f"model = PeftModel.from_pretrained(base, \"path/to/this/dir/adapter\")  # adapter on the base\n```\n")
    if train.task == "seq-classification":
        return ("This directory holds a LoRA adapter and the trained classification head (needs the base model); "
                "`config.json` beside it gives the labels and the pad token, which the base model's own config "
                "lacks.\n\n"
                "```python\nfrom transformers import AutoConfig, AutoTokenizer\n"
                "from peft import AutoPeftModelForSequenceClassification\n\n"
                "config = AutoConfig.from_pretrained(\"path/to/this/dir\")\n"
                "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
                "    \"path/to/this/dir\", num_labels=config.num_labels, id2label=config.id2label,\n"
                "    label2id=config.label2id, pad_token_id=config.pad_token_id)  # the base named in adapter_config.json\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/dir\")\n```\n")
    return (f"This directory holds a LoRA adapter (needs the base model).\n\n"
            f"```python\nfrom peft import {peft_cls}, PeftModel\n\n"
            f"model = {peft_cls}.from_pretrained(\"path/to/this/dir\")  # loads the base named in adapter_config.json\n"
            f"# or: PeftModel.from_pretrained({cls}.from_pretrained(\"<base model>\"), \"path/to/this/dir\")\n```\n")


IMAGE_ONLY = ("resolution", "snr_gamma", "noise_offset", "cache_latents")
"""Hyperparameters that only text-to-image reads (listed on its cards only)."""
PREFERENCE_FIELDS = {"explicit": "prompt + chosen + rejected", "implicit": "chosen + rejected",
                     "unpaired": "prompt + completion + label"}


def model_card(train: Any, *, base_model: str, hub_id: str | None, data_info: dict[str, Any], metrics: dict[str, float],
               precision: str) -> str:
    """README.md of the model dir: `base_model` as the user named it in the text, and in the metadata only `hub_id`
    (the Hub model it was loaded from, `cloudtune.train.models.hub_model_id`; None: a local or bucket model)."""
    data = train.data
    hp = {name: getattr(train.hyperparameters, name) for name in type(train.hyperparameters).model_fields
          if train.task == "text-to-image" or name not in IMAGE_ONLY}
    hp["precision"] = f"{hp['precision']} (used: {precision})" if hp["precision"] == "auto" else hp["precision"]
    lines = [
        "---",
        *([f"base_model: {json.dumps(hub_id)}"] if hub_id else []),  # the Hub links an id to its page
        f"library_name: {'peft' if train.lora is not None and not train.lora.merge else 'transformers'}",
        f"pipeline_tag: {PIPELINE_TAGS.get(train.task, 'text-generation')}",
        "tags: [cloudtune]",
        "---",
        "",
        f"# Fine-tuned {base_model}",
        "",
        f"Trained by cloudtune's `{train.task}` recipe"
        + (f" with LoRA (r={train.lora.r}, alpha={train.lora.alpha}, dropout={train.lora.dropout}, "
           f"merged={'yes' if train.lora.merge else 'no'})" if train.lora is not None else " (full fine-tune)") + ".",
        "",
        "## Data",
        "",
        f"- training input: `{data.train}` ("
        + ("streamed" if data_info.get("train_examples", "?") is None else f"{data_info.get('train_examples', '?')} examples")
        + (f", {data_info['train_dropped']} dropped by max_seq_len" if data_info.get("train_dropped") else "") + ")",
        "- eval input: " + (f"`{data.eval}` ({data_info.get('eval_examples', '?')} examples)" if data.eval else "none"),
    ]
    if train.task == "text-to-audio":
        lines.append(f"- audio clips with descriptions (field `{data.text_field}`): {data_info.get('train_clips', '?')} "
                     f"clips, {data_info.get('train_seconds', '?')} s, cut to pieces of at most "
                     f"{train.audio.max_seconds:g} s; description dropout {train.audio.description_dropout:g}")
        if train.validation is not None:
            lines.append(f"- samples: `samples/` ({len(train.validation.prompts)} prompts x seeds "
                         f"{train.validation.seeds}, {train.validation.seconds:g} s each)")
    elif train.task == "preference":
        pref = train.preference
        shape = data_info.get("format", "explicit")
        lines.append(f"- preference data: {shape} ({PREFERENCE_FIELDS.get(shape, shape)})")
        if pref is not None:
            lines.append(f"- method: {pref.method}, beta {pref.beta:g}"
                         + (f", reference {pref.reference}" if pref.method in ("dpo", "kto") else ""))
    elif train.task == "seq-classification":
        labels = data_info.get("labels") or []
        lines.append(f"- text field `{data.text_field}`, label field `{data.label_field}`; labels: {', '.join(map(str, labels))}")
    else:
        fmt = data_info.get("format", data.format)
        fields = {"text": f"`{data.text_field}`", "instruction": f"`{data.prompt_field}` + `{data.completion_field}` (loss on the completion)",
                  "chat": f"`{data.messages_field}` (loss on assistant turns)"}.get(fmt, "")
        lines.append(f"- format: {fmt}, fields {fields}")
        if data.packing and data.streaming:
            lines.append("- packed greedily in stream order (position ids restart per example, no padding)")
        elif data.packing:
            lines.append(f"- packed into {data_info.get('packed_rows', '?')} rows (pad tokens per epoch "
                         f"{data_info.get('pad_tokens_unpacked', '?')} -> {data_info.get('pad_tokens_packed', '?')})")
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in hp.items()]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    lines += ["", "## Loading", "", _loading(train)]
    return "\n".join(lines)


def write_model_card(model_dir: Path, train: Any, **kwargs: Any) -> Path:
    path = Path(model_dir) / "README.md"
    path.write_text(model_card(train, **kwargs), encoding="utf-8")
    return path
