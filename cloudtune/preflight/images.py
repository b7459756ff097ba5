"""Plan-time checks of a text-to-image job (torch-free): every image's header and caption
(`cloudtune.data.images`), a local base pipeline dir (its `model_index.json`), and 8-bit Adam / NF4 base weights
only on a CUDA GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.preflight.problems import PreflightError
from cloudtune.spec.image import DEFAULT_RESOLUTION

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec, TrainSpec


def image_data_problems(train: "TrainSpec", inputs: dict[str, Path], shown: dict[str, str]) -> list[str]:
    """Problems of the local image inputs of `train.data.train` / `eval` (`inputs`: name -> local dir)."""
    from cloudtune.data.images import image_problems

    data, hp = train.data, train.hyperparameters
    problems: list[str] = []
    for name in (data.train, data.eval):
        if name is not None and name in inputs:
            problems += image_problems(inputs[name], data.text_field, data.instance_prompt,
                                       hp.resolution or DEFAULT_RESOLUTION, data.bucketing, shown[name])
    return problems


PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def pipeline_dir_problems(model_dir: Path, shown: str) -> list[str]:
    """A local base model of text-to-image must be a diffusers pipeline dir: model_index.json naming a UNet
    (SD 1.x/2.x, SDXL), each part a subdir. A LoRA output of an earlier job (pytorch_lora_weights.safetensors) is
    accepted: its base comes from its own record."""
    if (model_dir / "pytorch_lora_weights.safetensors").is_file():
        return []
    index = model_dir / "model_index.json"
    if not index.is_file():
        return [f"train.model {shown}: not a diffusers pipeline dir (no model_index.json). To fix: save the pipeline "
                f"with pipeline.save_pretrained(DIR), or name a Hub id such as "
                f"stable-diffusion-v1-5/stable-diffusion-v1-5"]
    try:
        parts: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{shown}/model_index.json: not JSON ({exc}). To fix: save the pipeline again with save_pretrained"]
    if "unet" not in parts:
        return [f"{shown}/model_index.json: the pipeline {parts.get('_class_name')!r} has no UNet; text-to-image "
                f"trains the UNet families (Stable Diffusion 1.x/2.x, SDXL). To fix: use such a pipeline"]
    listed = [part for part in PIPELINE_PARTS + ("text_encoder_2", "tokenizer_2") if part in parts and parts[part]
              and parts[part][0] is not None]
    missing = [f"{shown}: no {part}/ subdir, which model_index.json lists. To fix: save the whole pipeline with "
               f"save_pretrained" for part in listed if not (model_dir / part).is_dir()]
    return missing + [problem for part in listed if part in WEIGHTED_PARTS and (model_dir / part).is_dir()
                      for problem in _weights_problem(model_dir / part, f"{shown}/{part}")]


WEIGHTED_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
"""The pipeline parts whose folders hold weights (save_pretrained writes *.safetensors, or *.bin, and an index for
shards); tokenizer and scheduler folders hold configuration only."""
LFS_POINTER = b"version https://git-lfs"


def _weights_problem(part: Path, shown: str) -> list[str]:
    """A pipeline part without its weights (an interrupted copy), or with Git LFS pointers in their place (a clone
    without `git lfs pull`): one line with the fix; [] when a weights file is there."""
    files = [f for f in part.iterdir() if f.is_file() and f.name.endswith((".safetensors", ".bin", ".index.json"))]
    if not files:
        return [f"{shown}: no weights file (*.safetensors or *.bin) in it. To fix: copy the pipeline again, or save it "
                f"with pipeline.save_pretrained(DIR)"]
    for f in files:
        if f.stat().st_size < 1024 and f.read_bytes().startswith(LFS_POINTER):
            return [f"{shown}/{f.name}: a Git LFS pointer, not the weights. To fix: run `git lfs pull` in the clone"]
    return []


def cuda_only_problems(spec: "JobSpec", train: "TrainSpec", cuda: bool | None) -> list[str]:
    """8-bit AdamW and NF4 base weights (bitsandbytes) need a CUDA GPU; `cuda`: whether the job's accelerator is one
    (None: unknown, nothing said)."""
    if cuda is None or cuda:
        return []
    accel = spec.resources.accelerator
    problems = []
    if train.hyperparameters.optimizer == "adamw_8bit":
        problems.append(f"train.hyperparameters.optimizer adamw_8bit needs a CUDA GPU (bitsandbytes' 8-bit AdamW); "
                        f"resources.accelerator is {accel}. To fix: use optimizer: adamw, or a CUDA GPU (e.g. L4:1)")
    if train.lora is not None and train.lora.quantize is not None and train.task == "text-to-image":
        problems.append(f"train.lora.quantize: 4bit (NF4 base weights) needs a CUDA GPU (bitsandbytes); "
                        f"resources.accelerator is {accel}. To fix: remove quantize, or use a CUDA GPU (e.g. L4:1)")
    return problems


def pipeline_tokenizers(source: str, shown: str, local_only: bool) -> list[str]:
    """The deep check of a text-to-image base (`cloudtune validate --deep`, a local launch): the pipeline's
    tokenizers load (transformers, from the `tokenizer`/`tokenizer_2` subfolders); the weights are not loaded.
    Returns notes; raises PreflightError naming the subfolder and the fix."""
    from transformers import AutoTokenizer

    if Path(source).is_file() or (Path(source) / "pytorch_lora_weights.safetensors").is_file():
        return [f"train.model {shown} is a LoRA: the job fuses it into its base; not loaded here"]
    notes = []
    for sub in ("tokenizer", "tokenizer_2"):
        if local_only and not (Path(source) / sub).is_dir():
            continue
        try:
            tok = AutoTokenizer.from_pretrained(source, subfolder=sub, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            if sub == "tokenizer_2":
                continue
            raise PreflightError([f"train.model {shown}: cannot load its {sub}/ ({str(exc).splitlines()[0]}). To fix: "
                                  f"save the whole pipeline with save_pretrained"]) from None
        notes.append(f"model {shown}: {sub} loaded ({len(tok)} tokens, captions cut at {tok.model_max_length})")
    return notes
