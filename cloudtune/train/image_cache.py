"""The latent and text-embedding cache of text-to-image: the frozen VAE's latent distribution of every training
image (both flip variants when `random_flip`) and the frozen text encoders' embeddings of every caption (and of the
empty caption, for caption dropout), computed once per node and kept in the checkpoint dir, so a resumed job reads
them instead of encoding again.

Exact: the cache holds the distribution's parameters (mean, log-variance), not a sample, and a step draws the
latents from them with the global RNG as `latent_dist.sample()` would (`cloudtune.train.diffusion.sample_latents`);
encoding runs in float32 outside autocast both ways. It cannot be exact with random crops (every epoch another
crop) or a LoRA on the text encoders (their embeddings change as they train): the latents or the embeddings are then
computed in each step (`cache_plan`).

The file is complete or absent: written under a temporary name, renamed (a file rename, which bucket mounts
allow), then a marker file written last; its name carries a hash of everything that decides its content.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from cloudtune.train.image_data import Example, load_pixels


def cache_plan(train: Any) -> tuple[bool, bool, str | None]:
    """(cache latents, cache text embeddings, the note saying what is not cached and why or None) for the spec."""
    data, hp = train.data, train.hyperparameters
    wanted = hp.cache_latents
    if wanted is False:
        return False, False, None
    latents, text = data.center_crop, not (train.lora is not None and train.lora.text_encoders)
    reasons = []
    if not latents:
        reasons.append("latents are encoded in each step: random crops (center_crop: false) change them every epoch")
    if not text:
        reasons.append("text embeddings are encoded in each step: the text encoders train (lora.text_encoders)")
    return latents, text, ("cache: " + "; ".join(reasons)) if reasons else None


def cache_key(examples: list[Example], model: str, flip: bool, captions: list[str]) -> str:
    """A hash of what decides the cache's content: the model, each image (path, size, mtime) and bucket, flips,
    the captions."""
    h = hashlib.sha256(json.dumps([model, flip, captions]).encode())
    for ex in examples:
        stat = ex.record.path.stat()
        h.update(f"{ex.record.path}|{stat.st_size}|{stat.st_mtime_ns}|{ex.bucket}".encode())
    return h.hexdigest()[:16]


class LatentCache:
    """Cached latent parameters (by example index and flip), centre-crop offsets and text embeddings (by caption)."""

    def __init__(self, latents: bool, text: bool) -> None:
        self.latents, self.text = latents, text
        self.latent_params: dict[str, Any] = {}
        self.crops: dict[int, tuple[int, int]] = {}
        self.embeds: dict[str, tuple[Any, Any]] = {}

    def latent(self, index: int, flip: bool) -> Any:
        return self.latent_params[f"{index}:{int(flip)}"]

    def crop(self, index: int) -> tuple[int, int]:
        return self.crops[index]

    def text_embedding(self, caption: str) -> tuple[Any, Any]:
        return self.embeds[caption]

    def fill(self, pipe: Any, examples: list[Example], flip: bool, captions: list[str]) -> None:
        """Encode everything (no grad, float32 outside autocast; the cache is on the CPU)."""
        from cloudtune.train import diffusion

        if self.latents:
            for ex in examples:
                for flipped in ((False, True) if flip else (False,)):
                    pixels, crop = load_pixels(ex.record.path, ex.bucket, (0.5, 0.5), flipped)
                    params = diffusion.latent_parameters(pipe.vae, pixels.unsqueeze(0))
                    self.latent_params[f"{ex.index}:{int(flipped)}"] = params[0].cpu()
                    self.crops[ex.index] = crop
        if self.text:
            with torch.no_grad(), torch.autocast(device_type="cpu", enabled=False):
                for caption in sorted(set(captions) | {""}):
                    embeds, pooled = diffusion.encode_text(pipe, diffusion.tokenize(pipe, [caption]))
                    self.embeds[caption] = (embeds[0].float().cpu(), None if pooled is None else pooled[0].float().cpu())

    def state(self) -> dict[str, Any]:
        return {"latents": self.latent_params, "crops": self.crops, "embeds": self.embeds}

    def load(self, state: dict[str, Any]) -> None:
        self.latent_params, self.crops, self.embeds = state["latents"], state["crops"], state["embeds"]


def build_cache(pipe: Any, examples: list[Example], flip: bool, captions: list[str], latents: bool, text: bool,
                cache_dir: Path, key: str, node_leader: bool, say: Any) -> LatentCache:
    """The cache, read from `cache_dir` when a complete one with `key` is there, else computed (by this node's
    local rank 0, `node_leader`, which writes it; the other local ranks wait for it and read it)."""
    import torch.distributed as dist

    cache = LatentCache(latents, text)
    path, marker = cache_dir / f"cache-{key}.pt", cache_dir / f"cache-{key}.complete"
    if node_leader and not marker.is_file():
        cache.fill(pipe, examples, flip, captions)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            torch.save(cache.state(), tmp)
            os.replace(tmp, path)
            marker.write_text(key + "\n", encoding="utf-8")
            say(f"cache: latents and text embeddings of {len(examples)} images written to {path}")
        except OSError as exc:
            say(f"warning: cache not saved ({exc}); a restart encodes the images again")
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return cache
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if marker.is_file():
        cache.load(torch.load(path, weights_only=False))
        if node_leader:
            say(f"cache: read from {path} (computed earlier for this data and model)")
        return cache
    cache.fill(pipe, examples, flip, captions)
    return cache
