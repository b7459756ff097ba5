"""Build everything the image-style example needs, offline: a tiny Stable-Diffusion-shaped pipeline from configs
(random weights: a UNet, a VAE and a CLIP text encoder of a few channels, and a CLIP tokenizer over lower-case
letters) in models/tiny-sd, and solid-colour images captioned by their colour in data/images (an imagefolder with
metadata.jsonl). Nothing is downloaded.

    python examples/image-style/prepare.py
    cloudtune launch examples/image-style/job.yaml
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
LETTERS = "abcdefghijklmnopqrstuvwxyz"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def tokenizer(path: Path) -> object:
    from transformers import CLIPTokenizer

    vocab = {}
    for token in ["!", *LETTERS, *(c + "</w>" for c in LETTERS), "<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=16,
                         pad_token="<|endoftext|>")


def pipeline(path: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=32,
                                        num_attention_heads=2, num_hidden_layers=2, pad_token_id=1,
                                        vocab_size=len(LETTERS) * 2 + 3, max_position_embeddings=16))
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    tok = tokenizer(path.parent / "_tokenizer")
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(path))
    shutil.rmtree(path.parent / "_tokenizer")


def images(path: Path, per_colour: int = 8, size: int = 32) -> None:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng, rows = random.Random(0), []
    for name, rgb in COLOURS.items():
        for i in range(per_colour):
            pixels = bytes(max(0, min(255, c + rng.randint(-8, 8))) for _ in range(size * size) for c in rgb)
            Image.frombytes("RGB", (size, size), pixels).save(path / f"{name}_{i}.png")
            rows.append({"file_name": f"{name}_{i}.png", "text": f"a {name} square"})
    (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    pipeline(HERE / "models" / "tiny-sd")
    images(HERE / "data" / "images")
    print(f"wrote {HERE / 'models' / 'tiny-sd'} and {HERE / 'data' / 'images'}")
