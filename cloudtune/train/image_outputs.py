"""What a text-to-image job leaves in its model dir (rank 0 writes it):

- `pytorch_lora_weights.safetensors`: the LoRA in diffusers' format (`pipeline.load_lora_weights(DIR)` loads it),
  saved with the pipeline class's own `save_lora_weights`; with `lora.merge: true` it goes to `lora/` and the model
  dir holds the whole pipeline with the LoRA fused in (`DiffusionPipeline.from_pretrained(DIR)`);
- `cloudtune_lora.json`: the base pipeline the LoRA was trained on (read when the LoRA is a later job's model);
- `samples/`: the validation samples of every evaluation and their index (cloudtune.train.image_validation);
- `metrics.json`, the loss plots and `README.md`, a model card saying how to load the LoRA.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import TrainSpec
from cloudtune.train import diffusion
from cloudtune.train.models import hub_model_id
from cloudtune.train.outputs import write_json
from cloudtune.train.plots import write_training_plots


def lora_layers(pipe: Any) -> dict[str, Any]:
    """`save_lora_weights` keywords: the UNet's (and trained text encoders') LoRA state dicts in peft's naming
    (`...to_q.lora_A.weight`, which `load_lora_weights` reads as is; diffusers 0.42 drops the attention layers of
    the older `lora.down` naming when a UNet LoRA also adapts convolutions) and their LoraConfig (r, alpha) as the
    adapter metadata, so a loaded LoRA has the trained scale alpha / r."""
    from peft.utils import get_peft_model_state_dict

    layers: dict[str, Any] = {"unet_lora_layers": get_peft_model_state_dict(pipe.unet),
                              "unet_lora_adapter_metadata": _inference_config(pipe.unet)}
    names = ("text_encoder", "text_encoder_2")
    for name, encoder in zip(names, diffusion.text_encoders(pipe)):
        if getattr(encoder, "peft_config", None):
            layers[f"{name}_lora_layers"] = get_peft_model_state_dict(encoder)
            layers[f"{name}_lora_adapter_metadata"] = _inference_config(encoder)
    return layers


def _inference_config(module: Any) -> dict[str, Any]:
    """The module's LoraConfig as saved: lora_dropout 0, since `load_lora_weights` leaves the new LoRA layers in
    training mode (diffusers 0.42 + peft 0.21), where a dropout would make every image slightly random."""
    return module.peft_config["default"].to_dict() | {"lora_dropout": 0.0}


def save_lora(pipe: Any, directory: Path, base_model: str) -> Path:
    """Write the LoRA in diffusers' format (and the base it adapts) to `directory`; returns the weights file."""
    directory.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(save_directory=str(directory), safe_serialization=True, **lora_layers(pipe))
    (directory / diffusion.BASE_RECORD).write_text(json.dumps({"base_model": base_model}, indent=1) + "\n",
                                                   encoding="utf-8")
    return directory / diffusion.LORA_WEIGHTS


def fuse_into_pipeline(pipe: Any, directory: Path) -> None:
    """Fuse the LoRA into the base weights and save the whole pipeline to `directory` (the training pipeline is
    changed: call this last)."""
    components = ["unet"] + [n for n, te in zip(("text_encoder", "text_encoder_2"), diffusion.text_encoders(pipe))
                             if getattr(te, "peft_config", None)]
    pipe.fuse_lora(components=components, adapter_names=["default"])
    pipe.unload_lora_weights()
    pipe.save_pretrained(str(directory))


def model_card(train: TrainSpec, base_model: str, metrics: dict[str, float], fused: bool, precision: str,
               hub_id: str | None = None) -> str:
    """README.md of the model dir: how to load the LoRA (or the fused pipeline), how it was trained, the figures.
    The metadata's `base_model` is `hub_id` only (the Hub model it was loaded from; None: a local or bucket model)."""
    prompt = train.validation.prompts[0] if train.validation is not None else "a photo"
    hp, lora, data = train.hyperparameters, train.lora, train.data
    if fused:
        use = (f'pipe = DiffusionPipeline.from_pretrained("path/to/this/dir")  # the LoRA is fused in\n'
               f'# or the LoRA alone (in lora/):\n# pipe = DiffusionPipeline.from_pretrained("{base_model}")\n'
               f'# pipe.load_lora_weights("path/to/this/dir/lora")\n')
    else:
        use = (f'pipe = DiffusionPipeline.from_pretrained("{base_model}")\n'
               f'pipe.load_lora_weights("path/to/this/dir")  # pytorch_lora_weights.safetensors\n')
    rows = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    metadata = f"base_model: {json.dumps(hub_id)}\n" if hub_id else ""
    return f"""---
{metadata}library_name: diffusers
tags: [text-to-image, diffusers, lora, cloudtune]
---
# LoRA for {base_model}

A LoRA (rank {lora.r if lora else '-'}, alpha {lora.alpha if lora else '-'}) on the UNet
{'and the text encoders ' if lora and lora.text_encoders else ''}of `{base_model}`, trained with cloudtune
(`task: text-to-image`, diffusers + peft).

## Use

```python
from diffusers import DiffusionPipeline

{use}image = pipe("{prompt}").images[0]
```

## Training

| setting | value |
|---|---|
| resolution | {hp.resolution or 512} (bucketing {'on' if data.bucketing else 'off'}) |
| steps / batch size | {metrics.get('global_step', '-')} / {hp.batch_size} x {hp.gradient_accumulation_steps} accumulation |
| learning rate | {hp.learning_rate} |
| precision | {precision} |
| snr_gamma / noise_offset | {hp.snr_gamma} / {hp.noise_offset} |
| random_flip / caption_dropout | {data.random_flip} / {data.caption_dropout} |

| metric | value |
|---|---|
{rows}

The validation samples of each evaluation are in `samples/` (`samples/samples.json` lists them).
"""


def write_image_outputs(ctx: RuntimeContext, train: TrainSpec, trainer: Any, setup: Any, base_model: str,
                        metrics: dict[str, float], precision: str) -> None:
    """Rank 0 writes the LoRA (or the fused pipeline + lora/), the samples, metrics.json, plots and README.md."""
    if trainer.args.process_index == 0:
        model_dir = Path(ctx.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        fused = bool(train.lora is not None and train.lora.merge)
        save_lora(setup.pipe, model_dir / "lora" if fused else model_dir, base_model)
        samples = Path(ctx.checkpoint_dir) / "samples"
        if samples.is_dir():
            shutil.copytree(samples, model_dir / "samples", dirs_exist_ok=True)
        write_json(model_dir / "metrics.json", metrics)
        try:  # PNG loss and learning-rate plots; never fails the job
            write_training_plots(model_dir, trainer.state.log_history)
        except Exception as exc:  # noqa: BLE001
            say(f"warning: plots not written: {exc}")
        (model_dir / "README.md").write_text(model_card(train, base_model, metrics, fused, precision,
                                                                 hub_model_id(ctx, train)), encoding="utf-8")
        if fused:
            fuse_into_pipeline(setup.pipe, model_dir)
        say(f"LoRA ({diffusion.LORA_WEIGHTS}{', fused pipeline' if fused else ''}), samples, metrics.json and "
            f"README.md written to {model_dir}")
    trainer.accelerator.wait_for_everyone()
