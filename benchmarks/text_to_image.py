"""text-to-image LoRA: cloudtune's recipe against the training loop diffusers documents, side by side in one run.

The peer is diffusers' `examples/text_to_image/train_text_to_image_lora.py` loop, written plainly here from its
documentation (the script is not shipped in the wheel): frozen VAE and text encoder, `unet.add_adapter(LoraConfig)`
on to_q/to_k/to_v/to_out.0, AdamW on the LoRA parameters, each step encoding the images with the VAE and the
captions with the text encoder, DDPM noise and timesteps, MSE on the epsilon target. Both train the same tiny
pipeline (tests/tiny_diffusion.py, built from configs), on the same images, resolution, steps, batch and LoRA, on
the CPU with one torch thread, each in its own process:

- images/s: images trained / seconds of the training loop (cloudtune: the Trainer's train_runtime, which also
  includes its checkpoint at the end; the peer: its loop, which saves nothing);
- peak memory: the process's peak resident set (ru_maxrss), loading included.

cloudtune runs twice: as configured by default (latents and text embeddings cached: exact, see
cloudtune.train.image_cache) and with `cache_latents: false` (the same work per step as the peer).

    python benchmarks/text_to_image.py [--steps 40] [--batch 4] [--resolution 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def peer(pipe_dir: str, data_dir: str, steps: int, batch: int, resolution: int, rank: int, lr: float) -> dict:
    """The documented loop (train_text_to_image_lora.py), no accelerate wrapper (one CPU process)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(1)
    scheduler = DDPMScheduler.from_pretrained(pipe_dir, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(pipe_dir, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(pipe_dir, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(pipe_dir, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(pipe_dir, subfolder="unet")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    rows = [json.loads(line) for line in (Path(data_dir) / "metadata.jsonl").read_text().splitlines()]

    def pixels(name: str) -> torch.Tensor:  # Resize, CenterCrop, ToTensor, Normalize([0.5], [0.5])
        img = Image.open(Path(data_dir) / name).convert("RGB").resize((resolution, resolution), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

    examples = [(pixels(r["file_name"]), tokenizer(r["text"], max_length=tokenizer.model_max_length,
                                                   padding="max_length", truncation=True,
                                                   return_tensors="pt").input_ids[0]) for r in rows]
    loader = torch.utils.data.DataLoader(examples, batch_size=batch, shuffle=True, drop_last=False,
                                         collate_fn=lambda b: (torch.stack([x for x, _ in b]),
                                                               torch.stack([y for _, y in b])))
    unet.train()
    done, images, started = 0, 0, time.perf_counter()
    while done < steps:
        for pixel_values, input_ids in loader:
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(input_ids, return_dict=False)[0]
            pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done, images = done + 1, images + latents.shape[0]
            if done == steps:
                break
    seconds = time.perf_counter() - started
    return {"images_per_second": images / seconds, "seconds": seconds, "final_loss": float(loss)}


def ours(pipe_dir: str, data_dir: str, steps: int, batch: int, resolution: int, rank: int, lr: float,
         cache: bool, work: str) -> dict:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train import run_recipe

    spec = TrainSpec.model_validate({
        "task": "text-to-image", "model": "base", "lora": {"r": rank, "alpha": rank, "target_modules": TARGETS,
                                                             "dropout": 0.0},
        "hyperparameters": {"resolution": resolution, "max_steps": steps, "batch_size": batch, "learning_rate": lr,
                            "seed": 1, "cache_latents": cache},
        "data": {"bucketing": False}, "report_to": "none"})
    ctx = RuntimeContext.single_process(Path(work), {"train": Path(data_dir), "base": Path(pipe_dir)},
                                        job_name="bench", provider="local")
    metrics = run_recipe(ctx, spec, CheckpointSpec(every_steps=10 * steps, keep=1))
    return {"images_per_second": metrics["images_per_second"], "seconds": metrics["train_runtime_s"],
            "final_loss": metrics["train_loss"]}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    common = (args.pipe, args.data, args.steps, args.batch, args.resolution, args.rank, args.lr)
    out = peer(*common) if args.child == "peer" else ours(*common, args.child == "cloudtune", args.work)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_child(kind: str, args: argparse.Namespace, pipe: Path, data: Path, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--pipe", str(pipe), "--data", str(data), "--work",
           str(tmp / kind), "--steps", str(args.steps), "--batch", str(args.batch), "--resolution",
           str(args.resolution), "--rank", str(args.rank), "--lr", str(args.lr)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                                                                     "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--child", choices=["peer", "cloudtune", "cloudtune-nocache"])
    parser.add_argument("--pipe"), parser.add_argument("--data"), parser.add_argument("--work")
    args = parser.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_diffusion import make_colour_images, make_tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pipe = make_tiny_sd_pipeline(tmp / "pipe")
        data = make_colour_images(tmp / "data", per_colour=8, size=args.resolution)
        results = {kind: run_child(kind, args, pipe, data, tmp) for kind in ("peer", "cloudtune", "cloudtune-nocache")}
    base = results["peer"]
    print(f"text-to-image LoRA, tiny SD pipeline, {args.steps} steps x batch {args.batch} at {args.resolution} px, "
          f"LoRA r={args.rank} on {TARGETS}, CPU, 1 thread, {time.strftime('%Y-%m-%d')}")
    print(f"{'run':<20}{'images/s':>10}{'vs peer':>9}{'peak RSS MB':>13}{'vs peer':>9}")
    for kind, r in results.items():
        print(f"{kind:<20}{r['images_per_second']:>10.2f}{r['images_per_second'] / base['images_per_second']:>8.2f}x"
              f"{r['peak_rss_mb']:>13.0f}{r['peak_rss_mb'] / base['peak_rss_mb']:>8.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
