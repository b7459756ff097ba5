"""Validation of text-to-image (`train.validation`): sample images of fixed prompts and seeds at step 0 (the base
model), every `every_steps` steps and at the end; the validation loss at fixed timesteps and noise (overfitting);
the collapse check.

Samples go to `<checkpoint dir>/samples/step-NNNNNN/promptP-seedS.png` with an index `samples.json` (kept across
restarts; copied into the model dir at the end, where `cloudtune report` reads them), and to TensorBoard.

Collapse: the mean pairwise distance between the samples of different prompts and seeds (RMS pixel difference
in [0, 1], on images scaled to at most 64 px a side) falling below `collapse_ratio` x the base model's is
warned once per evaluation: `[cloudtune] health: collapse at step N: ...` with what to try.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from cloudtune.contracts.logfmt import LOG_PREFIX, say
from cloudtune.train import diffusion
from cloudtune.train.health import HEALTH_PREFIX
from cloudtune.train.image_data import Example, load_pixels

SAMPLES_INDEX = "samples.json"
DISTANCE_SIDE = 64


def image_distance(images: list[Any]) -> float | None:
    """Mean pairwise RMS distance of PIL images (scaled to at most 64 px a side, values in [0, 1]); None for
    fewer than two images."""
    import numpy as np

    if len(images) < 2:
        return None
    arrays = []
    for img in images:
        small = img.convert("RGB").resize((DISTANCE_SIDE, DISTANCE_SIDE)) if max(img.size) > DISTANCE_SIDE else img.convert("RGB")
        arrays.append(np.asarray(small, dtype=np.float64) / 255.0)
    pairs = [float(np.sqrt(np.mean((a - b) ** 2))) for a, b in itertools.combinations(arrays, 2)]
    return sum(pairs) / len(pairs)


def collapse_warning(step: int, distance: float | None, base: float | None, ratio: float) -> str | None:
    """The collapse warning for the samples at `step`, or None (no base, too few images, or not collapsed)."""
    if distance is None or base is None or base <= 0 or distance >= ratio * base:
        return None
    return (f"collapse at step {step}: the validation samples of different prompts and seeds are near-identical "
            f"(mean pairwise distance {distance:.4f}, {distance / base:.0%} of the base model's {base:.4f}). Try a "
            f"lower learning_rate or fewer steps (use an earlier checkpoint), a smaller lora.alpha, more varied "
            f"captions, or caption_dropout")


def validation_loss(pipe: Any, examples: list[Example], snr_gamma: float | None) -> float | None:
    """The loss at fixed timesteps (evenly spread) and fixed noise (seeded per example) of `examples` (centre crop,
    no flip, latents at the distribution's mean): comparable from one evaluation to the next."""
    if not examples:
        return None
    scheduler, total = pipe.scheduler, pipe.scheduler.config.num_train_timesteps
    losses = []
    with torch.no_grad():
        for i, ex in enumerate(examples):
            pixels, crop = load_pixels(ex.record.path, ex.bucket, (0.5, 0.5), False)
            params = diffusion.latent_parameters(pipe.vae, pixels.unsqueeze(0))
            from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

            latents = DiagonalGaussianDistribution(params).mode() * pipe.vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(i)).to(latents.device)
            t = torch.tensor([int((i % 8 + 0.5) * total / 8)], device=latents.device)
            embeds, pooled = diffusion.encode_text(pipe, diffusion.tokenize(pipe, [ex.record.caption]))
            added = None
            if pooled is not None:
                (width, height), (bw, bh) = ex.size, ex.bucket
                ids = torch.tensor([[height, width, crop[0], crop[1], bh, bw]], dtype=pipe.unet.dtype)
                added = {"text_embeds": pooled.to(pipe.unet.dtype), "time_ids": ids.to(latents.device)}
            losses.append(float(diffusion.diffusion_loss(pipe.unet, scheduler, latents, embeds, added, snr_gamma, 0.0,
                                                         timesteps=t, noise=noise)))
    return sum(losses) / len(losses)


class Validator:
    """Renders and scores the validation samples (rank 0); keeps the index in the samples dir."""

    def __init__(self, spec: Any, pipe: Any, resolution: int, samples_dir: Path, loss_examples: list[Example],
                 snr_gamma: float | None) -> None:
        self.spec, self.pipe, self.resolution = spec, pipe, resolution
        self.dir, self.loss_examples, self.snr_gamma = Path(samples_dir), loss_examples, snr_gamma
        self.index = self._read_index()
        self.collapsed_at: int | None = None

    def _read_index(self) -> dict[str, Any]:
        path = self.dir / SAMPLES_INDEX
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                pass
        return {"prompts": list(self.spec.prompts), "seeds": list(self.spec.seeds), "steps": []}

    def base_distance(self) -> float | None:
        base = [e for e in self.index["steps"] if e["step"] == 0]
        return base[0].get("distance") if base else None

    def render(self) -> list[tuple[int, int, Any]]:
        """(prompt index, seed, PIL image) for every prompt and seed, the UNet in eval mode, the global RNG kept."""
        unet = self.pipe.unet
        was_training = unet.training
        unet.eval()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        out = []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                for (p, prompt), seed in itertools.product(enumerate(self.spec.prompts), self.spec.seeds):
                    generator = torch.Generator("cpu").manual_seed(int(seed))
                    image = self.pipe(prompt, num_inference_steps=self.spec.steps, guidance_scale=self.spec.guidance_scale,
                                      height=self.resolution, width=self.resolution, generator=generator).images[0]
                    out.append((p, int(seed), image))
        finally:
            unet.train(was_training)
        return out

    def evaluate(self, step: int) -> dict[str, Any]:
        """Render, save, score the samples at `step`; returns {step, files, distance, val_loss} (also indexed)."""
        images = self.render()
        folder = self.dir / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for p, seed, image in images:
            name = f"prompt{p}-seed{seed}.png"
            image.save(folder / name)
            files.append(f"{folder.name}/{name}")
        unet = self.pipe.unet
        was_training = unet.training
        unet.eval()
        try:
            loss = validation_loss(self.pipe, self.loss_examples, self.snr_gamma)
        finally:
            unet.train(was_training)
        entry = {"step": step, "files": files, "distance": image_distance([im for _, _, im in images]),
                 "val_loss": loss}
        self.index["steps"] = [e for e in self.index["steps"] if e["step"] != step] + [entry]
        self.index["steps"].sort(key=lambda e: e["step"])
        tmp = self.dir / (SAMPLES_INDEX + ".tmp")
        tmp.write_text(json.dumps(self.index, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / SAMPLES_INDEX)
        entry["pngs"] = {f"samples/prompt{p}-seed{s}": (im.width, im.height, _png(im)) for p, s, im in images}
        return entry


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def validation_callback(validator: Validator, health: Any, every: int) -> Any:
    """A TrainerCallback: samples at step 0 (a fresh run) and every `every` steps, on rank 0; the validation loss to
    the log, the status file, TensorBoard and the overfitting check (`health`: a HealthState); collapse warnings."""
    from transformers import TrainerCallback

    from cloudtune.train import health as ct_health

    class ValidationCallback(TrainerCallback):
        def __init__(self) -> None:
            self.trainer: Any = None
            self.report: Any = None

        def attach(self, trainer: Any, report: Any) -> None:
            self.trainer, self.report = trainer, report

        def run(self, step: int, control: Any) -> dict[str, Any]:
            entry = validator.evaluate(step)
            pngs = entry.pop("pngs")
            loss, distance = entry["val_loss"], entry["distance"]
            parts = [f"eval step{step}: val_loss={loss:.4f}" if loss is not None else f"eval step{step}:"]
            if distance is not None:
                parts.append(f"sample_distance={distance:.4f}")
            say(" ".join(parts) + f" samples={validator.dir / f'step-{step:06d}'}")
            state = self.trainer.state
            state.log_history.append({"step": step, "eval_loss": loss, "val_image_distance": distance})
            if self.report is not None:
                if self.report.status_dir is None:
                    self.report.open(self.trainer.args.output_dir, getattr(self.trainer.args, "ct_tensorboard_dir", None))
                if loss is not None:
                    self.report.update(eval_loss=loss, eval_step=step)
                    self.report.scalars(step, {"eval/val_loss": loss} | ({} if distance is None else
                                                                          {"eval/sample_distance": distance}))
                if self.report.tb is not None:
                    try:
                        self.report.tb.images(step, pngs)
                    except OSError:
                        pass
            if step > 0 and loss is not None and math.isfinite(loss) and control is not None:
                ct_health.on_evaluation(health, step, loss, control, None)
            if step > 0 and validator.spec.collapse:
                warning = collapse_warning(step, distance, validator.base_distance(), validator.spec.collapse_ratio)
                if warning:
                    validator.collapsed_at = validator.collapsed_at or step
                    say(HEALTH_PREFIX + warning)
            return entry

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.is_world_process_zero and state.global_step == 0 and validator.base_distance() is None:
                self.run(0, None)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            step = int(state.global_step)
            if state.is_world_process_zero and step % every == 0 and step < state.max_steps:
                self.run(step, control)
            return control

        def final(self, trainer: Any) -> dict[str, float]:
            """At the end of a completed run: the last step's samples (unless just rendered); metrics."""
            step = int(trainer.state.global_step)
            out: dict[str, float] = {}
            if trainer.args.process_index == 0:
                done = {e["step"]: e for e in validator.index["steps"]}
                entry = done.get(step) or self.run(step, trainer.control)
                if entry.get("val_loss") is not None:
                    out["val_loss"] = float(entry["val_loss"])
                if entry.get("distance") is not None:
                    out["sample_distance"] = float(entry["distance"])
                base = validator.base_distance()
                if base is not None:
                    out["sample_distance_base"] = float(base)
                if validator.collapsed_at is not None:
                    out["collapse_step"] = validator.collapsed_at
            return out

    return ValidationCallback()


__all__ = ["LOG_PREFIX", "Validator", "collapse_warning", "image_distance", "validation_callback", "validation_loss"]
