"""A tiny Stable-Diffusion-shaped pipeline and captioned images for tests: built from configs the way diffusers' own
tests build theirs (`tests/pipelines/stable_diffusion/test_stable_diffusion.py`: a 2-block `UNet2DConditionModel`,
a 2-block `AutoencoderKL`, a 2-layer `CLIPTextModel`), saved with `save_pretrained`, never downloaded. The CLIP
tokenizer is written here (character-level vocab.json + merges.txt), as diffusers' tests download theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_clip_tokenizer(path: Path) -> Path:
    """A CLIP BPE tokenizer over lower-case letters: each letter and letter+`</w>` a token, no merges (a word is
    its letters). Writes vocab.json, merges.txt and the tokenizer config to `path/tokenizer`."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for token in ["!", *LETTERS, *(c + "</w>" for c in LETTERS), "<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    out = Path(path) / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=16,
                              pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(out))
    return out


TEXT_CONFIG = dict(bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=32, layer_norm_eps=1e-05,
                   num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=len(LETTERS) * 2 + 3,
                   max_position_embeddings=16)
"""The tiny CLIP text encoder's config (2 layers of 16) over `write_clip_tokenizer`'s vocabulary."""


def tiny_vae():
    """A tiny AutoencoderKL (2 blocks of 8/16 channels, 4 latent channels: a latent side of half the image's)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=32)


def make_tiny_sd_pipeline(path: Path, sample_size: int = 16) -> Path:
    """Save a tiny StableDiffusionPipeline (UNet 2 blocks of 8/16 channels, VAE 2 blocks, CLIP text 2 layers of 16,
    DDPM training scheduler, no safety checker) to `path` (a dir with model_index.json); deterministic (seed 0).
    `sample_size`: the UNet's latent side (images of 8x that in pixels, the VAE's factor being 2 here: 2 blocks)."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    tok_dir = write_clip_tokenizer(path / "_tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = tiny_vae()
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(path))
    import shutil

    shutil.rmtree(path / "_tok", ignore_errors=True)
    return path


def make_colour_images(path: Path, colours: dict[str, tuple[int, int, int]] | None = None, per_colour: int = 4,
                       size: int = 32, layout: str = "metadata") -> Path:
    """Solid-colour PNGs captioned `a <colour> square` (with a little pixel noise, seeded), in one of the layouts
    the recipe reads: `metadata` (imagefolder metadata.jsonl), `csv` (metadata.csv), `txt` (kohya: same-name .txt),
    `subject` (images only). Returns `path`."""
    import random

    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows = []
    for name, rgb in (colours or COLOURS).items():
        for i in range(per_colour):
            pixels = bytes(max(0, min(255, c + rng.randint(-8, 8))) for _ in range(size * size) for c in rgb)
            file = f"{name}_{i}.png"
            Image.frombytes("RGB", (size, size), pixels).save(path / file)
            rows.append((file, f"a {name} square"))
    if layout == "metadata":
        (path / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, "text": t}) + "\n" for f, t in rows),
                                             encoding="utf-8")
    elif layout == "csv":
        (path / "metadata.csv").write_text("file_name,text\n" + "".join(f"{f},{t}\n" for f, t in rows), encoding="utf-8")
    elif layout == "txt":
        for f, t in rows:
            (path / f).with_suffix(".txt").write_text(t + "\n", encoding="utf-8")
    return path


def make_tiny_sdxl_pipeline(path: Path, sample_size: int = 16) -> Path:
    """Save a tiny StableDiffusionXLPipeline to `path`, shaped as diffusers' own SDXL fast tests build theirs
    (`tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py`): two CLIP text encoders (the second with a
    projection, giving the pooled embedding), a UNet with `addition_embed_type="text_time"` (size
    micro-conditioning: 6 time ids of `addition_time_embed_dim` each plus the pooled embedding, so
    `projection_class_embeddings_input_dim` = 6 x 8 + 16 = 64) and cross-attention over both encoders' hidden
    states (16 + 16 = 32). Deterministic (seed 0); never downloaded."""
    import shutil

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(path)
    tok_dir = write_clip_tokenizer(path / "_tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=64,
        cross_attention_dim=32, norm_num_groups=4)
    vae = tiny_vae()
    config = {**TEXT_CONFIG, "hidden_act": "gelu", "projection_dim": 16}
    text_encoder = CLIPTextModel(CLIPTextConfig(**config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler)
    pipe.save_pretrained(str(path))
    shutil.rmtree(path / "_tok", ignore_errors=True)
    return path
