"""The text-to-image recipe's model and Trainer: `DiffusionLoss` (the module trained: UNet with its LoRA, frozen text
encoders and VAE; `forward(**batch)` returns the diffusion loss), `ImageCollator` (one bucket's images -> a batch)
and `ImageTrainer` (the shared flow's `CloudtuneTrainer`, its checkpoints holding the LoRA weights only). The dataset's
epoch, on which its random choices depend, comes from `cloudtune.train.callbacks.EpochCallback`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cloudtune.errors import JobInputError
from cloudtune.train import diffusion
from cloudtune.train.image_data import BucketBatches, load_pixels, size_ids
from cloudtune.train.trainer import CloudtuneTrainer


LORA_STATE = "lora_state.safetensors"  # in each checkpoint: the trained (LoRA) parameters by name


class DiffusionLoss(torch.nn.Module):
    """The module the Trainer trains: the pipeline's UNet (with its LoRA), text encoders and VAE (frozen, unless the
    text encoders carry a LoRA too); `forward(**batch)` returns `{"loss": ...}` (cloudtune.train.diffusion)."""

    def __init__(self, pipe: Any, snr_gamma: float | None, noise_offset: float) -> None:
        super().__init__()
        self.unet, self.vae = pipe.unet, pipe.vae
        self.text_encoders = torch.nn.ModuleList(diffusion.text_encoders(pipe))
        self.snr_gamma, self.noise_offset = snr_gamma, noise_offset
        object.__setattr__(self, "pipe", pipe)  # not a submodule: its modules are registered above

    def embeddings(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        if "prompt_embeds" in batch:
            return batch["prompt_embeds"], batch.get("pooled_embeds")
        ids = [batch[k] for k in sorted(batch) if k.startswith("input_ids")]
        if any(p.requires_grad for p in self.text_encoders.parameters()):
            return diffusion.encode_text(self.pipe, ids)
        with torch.no_grad(), torch.autocast(device_type=ids[0].device.type, enabled=False):  # as the cache encodes
            return diffusion.encode_text(self.pipe, ids)

    def forward(self, **batch: Any) -> dict[str, Any]:
        params = batch.get("latent_params")
        if params is None:
            params = diffusion.latent_parameters(self.vae, batch["pixel_values"])
        latents = diffusion.sample_latents(self.vae, params.to(self.vae.device))
        embeds, pooled = self.embeddings(batch)
        added = None
        if pooled is not None:
            added = {"text_embeds": pooled.to(self.unet.dtype), "time_ids": batch["time_ids"].to(self.unet.dtype)}
        loss = diffusion.diffusion_loss(self.unet, self.pipe.scheduler, latents, embeds, added, self.snr_gamma,
                                        self.noise_offset)
        return {"loss": loss}

    def trained_state(self) -> dict[str, Any]:
        """The trained parameters (the LoRA), by name, on the CPU."""
        return {n: p.detach().to("cpu").contiguous() for n, p in self.named_parameters() if p.requires_grad}


class ImageCollator:
    """Builds a batch from one `BucketBatches` item: pixels (or cached latent parameters), token ids (or cached
    embeddings), SDXL's size ids, and `ct_num_tokens` (the images counted as the throughput)."""

    def __init__(self, pipe: Any, cache: Any, sdxl: bool) -> None:
        self.pipe, self.cache, self.sdxl = pipe, cache, sdxl

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [row for item in items for row in item["ct_rows"]]
        batch: dict[str, Any] = {"ct_num_tokens": torch.tensor(len(rows))}
        crops: list[tuple[int, int]] = []
        if self.cache is not None and self.cache.latents:
            batch["latent_params"] = torch.stack([self.cache.latent(ex.index, c.flip) for ex, c in rows])
            crops = [self.cache.crop(ex.index) for ex, _ in rows]
        else:
            pixels = [load_pixels(ex.record.path, ex.bucket, (c.crop_x, c.crop_y), c.flip) for ex, c in rows]
            batch["pixel_values"] = torch.stack([p for p, _ in pixels])
            crops = [crop for _, crop in pixels]
        captions = ["" if c.drop_caption else ex.record.caption for ex, c in rows]
        if self.cache is not None and self.cache.text:
            embeds = [self.cache.text_embedding(text) for text in captions]
            batch["prompt_embeds"] = torch.stack([e for e, _ in embeds])
            if self.sdxl:
                batch["pooled_embeds"] = torch.stack([p for _, p in embeds])
        else:
            for i, ids in enumerate(diffusion.tokenize(self.pipe, captions)):
                batch[f"input_ids_{i}"] = ids
        if self.sdxl:
            batch["time_ids"] = torch.tensor([size_ids(ex, crop) for (ex, _), crop in zip(rows, crops)],
                                             dtype=torch.float32)
        return batch


class ImageTrainer(CloudtuneTrainer):
    """The shared flow's Trainer whose checkpoints hold the LoRA weights only (LORA_STATE)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if self.args.should_save:
            out = Path(output_dir or self.args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            module = self.accelerator.unwrap_model(self.model)
            save_file(module.trained_state(), str(out / LORA_STATE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        module = self.accelerator.unwrap_model(model or self.model)
        state = load_file(str(Path(resume_from_checkpoint) / LORA_STATE))
        missing = set(module.trained_state()) - set(state)
        if missing:
            raise JobInputError(f"checkpoint {resume_from_checkpoint} lacks {len(missing)} LoRA tensors (e.g. "
                                f"{sorted(missing)[0]}): it was written by another LoRA setup; start a new job "
                                f"or restore the spec's train.lora")
        named = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                named[name].copy_(value.to(named[name].device, named[name].dtype))
