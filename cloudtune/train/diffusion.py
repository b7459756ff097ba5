"""The diffusion pieces of text-to-image, on diffusers + peft: loading a UNet pipeline (SD 1.x/2.x, SDXL), LoRA on
its UNet (and text encoders), encoding images (VAE latent distributions) and captions (text embeddings), and the
training loss (`DiffusionLoss`, the module the Trainer trains).

The loss is the one of diffusers' `examples/text_to_image/train_text_to_image_lora.py` (and `_sdxl.py`): latents
sampled from the VAE's distribution x its scaling factor, Gaussian noise (+ `noise_offset` x per-channel noise),
uniform timesteps, the scheduler's `add_noise`, the target `noise` (epsilon) or `get_velocity` (v-prediction), MSE,
optionally min-SNR weighted (`snr_gamma`, diffusers.training_utils.compute_snr).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudtune.errors import JobInputError

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
BASE_RECORD = "cloudtune_lora.json"  # beside the LoRA: the base pipeline it was trained on


def is_lora_dir(path: str) -> bool:
    """Whether `path` is a LoRA output of a text-to-image job (and not a fused pipeline)."""
    return (Path(path) / LORA_WEIGHTS).is_file() and not (Path(path) / "model_index.json").is_file()


def lora_base(path: str) -> str | None:
    """The base pipeline a LoRA dir records (BASE_RECORD), or None."""
    record = Path(path) / BASE_RECORD
    if not record.is_file():
        return None
    return str(json.loads(record.read_text(encoding="utf-8")).get("base_model") or "") or None


def load_pipeline(source: str, shown: str, dtype: Any, nf4: bool = False) -> Any:
    """The diffusers pipeline at `source` (a local dir with model_index.json, or a Hub id) in `dtype`, on the CPU.
    NF4 (`nf4`): the UNet's weights in 4 bits (bitsandbytes through diffusers' BitsAndBytesConfig; CUDA only).
    Raises JobInputError naming the model and the fix."""
    from diffusers import DiffusionPipeline

    local = Path(source).is_dir()
    kwargs: dict[str, Any] = {"torch_dtype": dtype}
    if local:
        kwargs["local_files_only"] = True
    try:
        if nf4:
            from diffusers import BitsAndBytesConfig, UNet2DConditionModel

            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(source, subfolder="unet", quantization_config=quant,
                                                                  torch_dtype=dtype, local_files_only=local)
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise JobInputError(f"train.model {shown}: cannot load it as a diffusers pipeline ({str(exc).splitlines()[0]}). "
                            f"To fix: name a pipeline dir (model_index.json) or a Hub id of a Stable Diffusion "
                            f"1.x/2.x or SDXL pipeline") from None
    if getattr(pipe, "unet", None) is None or getattr(pipe, "vae", None) is None:
        raise JobInputError(f"train.model {shown}: {type(pipe).__name__} has no UNet and VAE; text-to-image trains "
                            f"the UNet families (Stable Diffusion 1.x/2.x, SDXL). To fix: use such a pipeline")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_sdxl(pipe: Any) -> bool:
    """SDXL: two text encoders (the second with a projection: pooled embeddings) and size micro-conditioning."""
    return getattr(pipe, "text_encoder_2", None) is not None


def text_encoders(pipe: Any) -> list[Any]:
    return [te for te in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if te is not None]


def tokenizers(pipe: Any) -> list[Any]:
    return [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]


UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' text-to-image LoRA scripts' target modules
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # ... and their text-encoder targets


def add_lora(pipe: Any, lora: Any, text_encoders_too: bool) -> list[Any]:
    """LoRA adapters (peft, diffusers' `add_adapter`) on the UNet's attention (train.lora.target_modules, auto =
    to_q/to_k/to_v/to_out.0) and, when asked, the text encoders' attention; everything else frozen. Returns the
    trained modules."""
    from peft import LoraConfig

    targets = UNET_TARGETS if lora.target_modules == "auto" else list(lora.target_modules)
    for module in [pipe.unet, pipe.vae, *text_encoders(pipe)]:
        module.requires_grad_(False)
    trained = [pipe.unet]
    pipe.unet.add_adapter(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                     init_lora_weights="gaussian", target_modules=targets))
    if text_encoders_too:
        for te in text_encoders(pipe):
            te.add_adapter(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                      init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
            trained.append(te)
    return trained


def tokenize(pipe: Any, captions: list[str]) -> list[Any]:
    """Token ids (batch, max_length) per tokenizer, padded to its model_max_length as the pipelines do."""
    return [tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids for tok in tokenizers(pipe)]


def encode_text(pipe: Any, input_ids: list[Any]) -> tuple[Any, Any]:
    """(prompt embeddings (batch, tokens, dim), pooled embeddings (batch, dim) for SDXL else None), as the
    pipelines' encode_prompt computes them: SD the last hidden state; SDXL the penultimate hidden states of both
    encoders concatenated, and the second encoder's pooled (projected) output."""
    import torch

    encoders = text_encoders(pipe)
    if not is_sdxl(pipe):
        ids = input_ids[0].to(encoders[0].device)
        return encoders[0](ids, return_dict=False)[0], None
    embeds, pooled = [], None
    for encoder, ids in zip(encoders, input_ids):
        out = encoder(ids.to(encoder.device), output_hidden_states=True, return_dict=False)
        pooled = out[0]
        embeds.append(out[-1][-2])
    return torch.cat(embeds, dim=-1), pooled


def latent_parameters(vae: Any, pixels: Any) -> Any:
    """The VAE's latent distribution parameters (mean and log-variance, (batch, 2*C, h, w)) of `pixels` in
    [-1, 1], in float32 outside autocast, so they are the same whether computed for the cache or in a step."""
    import torch

    with torch.no_grad(), torch.autocast(device_type=pixels.device.type, enabled=False):
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters.float()


def sample_latents(vae: Any, parameters: Any) -> Any:
    """Latents drawn from the distribution `parameters` (the global RNG, as `latent_dist.sample()` draws them),
    scaled (and shifted, where the VAE has a shift factor) as the pipelines expect."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    latents = DiagonalGaussianDistribution(parameters).sample()
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


def diffusion_loss(unet: Any, scheduler: Any, latents: Any, embeds: Any, added: dict[str, Any] | None,
                   snr_gamma: float | None, noise_offset: float, timesteps: Any = None, noise: Any = None) -> Any:
    """The training loss of one batch (a scalar): noise, timesteps (the global RNG unless given), the scheduler's
    prediction target, MSE (min-SNR weighted with `snr_gamma`)."""
    import torch
    import torch.nn.functional as F

    batch = latents.shape[0]
    if noise is None:
        noise = torch.randn_like(latents)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((batch, latents.shape[1], 1, 1), device=latents.device)
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=latents.device).long()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise JobInputError(f"the pipeline's scheduler predicts {kind!r}; text-to-image trains epsilon and "
                            f"v_prediction models (Stable Diffusion 1.x/2.x, SDXL)")
    pred = unet(noisy.to(unet.dtype), timesteps, embeds.to(unet.dtype), added_cond_kwargs=added,
                return_dict=False)[0]
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / snr if kind == "epsilon" else weights / (snr + 1)
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
    return (loss * weights).mean()
