"""Training batches for text-to-image: images resized into their aspect-ratio bucket (`cloudtune.data.images`),
cropped (centre, or a random offset), optionally flipped, captions optionally dropped; batches of one bucket each.

The Trainer sees a dataset of *batches* (`BucketBatches`, per-device batch size 1): each item is up to
`batch_size` examples of the same bucket, grouped once with the run's seed, and the Trainer shuffles the items
each epoch (its seeded sampler, restored on resume). Random choices (flip, crop offset, caption dropout) are not
drawn from the global RNG, which the dataloader's look-ahead would consume out of step with the checkpointed RNG
state: each is a function of (seed, epoch, batch item, example), so a resumed run draws exactly what an
uninterrupted one does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.data.images import ImageRecord, bucket_for, header_size, opened_image


@dataclass(frozen=True)
class Example:
    """One training example as the batches hold it: the record, its original size and its bucket (pixels)."""

    index: int
    record: ImageRecord
    size: tuple[int, int]
    bucket: tuple[int, int]


def make_examples(records: Sequence[ImageRecord], resolution: int, bucketing: bool) -> list[Example]:
    """The examples with their sizes (image headers only) and buckets."""
    out = []
    for i, rec in enumerate(records):
        width, height = header_size(rec.path)
        out.append(Example(i, rec, (width, height), bucket_for(width, height, resolution, bucketing)))
    return out


def group_batches(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Example indices in batches of one bucket each (the last batch of a bucket may be smaller), in a seeded
    order: the same on every rank and every restart."""
    rng = random.Random(seed)
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for ex in examples:
        by_bucket.setdefault(ex.bucket, []).append(ex.index)
    batches: list[list[int]] = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket][:]
        rng.shuffle(members)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class Choice:
    """The random choices for one example in one epoch."""

    flip: bool
    crop_x: float  # 0..1: where the crop starts along the free width (0.5 = centre)
    crop_y: float
    drop_caption: bool


def choices(seed: int, epoch: int, item: int, position: int, flip: bool, center_crop: bool, dropout: float) -> Choice:
    """The choices of example `position` of batch item `item` in `epoch`: a pure function of its arguments."""
    rng = random.Random(f"{seed}:{epoch}:{item}:{position}")
    do_flip = rng.random() < 0.5
    cx, cy, drop = rng.random(), rng.random(), rng.random()
    return Choice(flip and do_flip, 0.5 if center_crop else cx, 0.5 if center_crop else cy, drop < dropout)


def rgb(img: Any) -> Any:
    """The image upright (EXIF orientation applied, as diffusers' scripts do with `ImageOps.exif_transpose`) in RGB.
    16-bit greyscale (PNG mode I;16, or I) is scaled to 8 bits first: Pillow's own conversion clips it at 255."""
    import numpy as np
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def load_pixels(path: Path, bucket: tuple[int, int], crop: tuple[float, float], flip: bool) -> tuple[Any, tuple[int, int]]:
    """The image as a float tensor (3, H, W) in [-1, 1] of the bucket's size: upright and in RGB (`rgb`), resized
    (bilinear, as diffusers' scripts' transforms.Resize) so it covers the bucket, cropped at `crop` (fractions of
    the free room), flipped horizontally when asked. Returns (tensor, (crop_top, crop_left)) in pixels of the resized
    image. JobInputError naming the file when it cannot be decoded (e.g. truncated)."""
    import numpy as np
    import torch
    from PIL import Image

    bw, bh = bucket
    with opened_image(path) as img:
        img = rgb(img)
        scale = max(bw / img.width, bh / img.height)
        size = (max(bw, round(img.width * scale)), max(bh, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        left, top = round((size[0] - bw) * crop[0]), round((size[1] - bh) * crop[1])
        img = img.crop((left, top, left + bw, top + bh))
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1), (top, left)


class BucketBatches:
    """The Trainer's training dataset: item i = the examples of batch `batches[i]` (indices into `examples`) with
    this epoch's choices. `epoch` is set at each epoch's start (`cloudtune.train.text_to_image`'s callback)."""

    def __init__(self, examples: Sequence[Example], batches: list[list[int]], seed: int, flip: bool,
                 center_crop: bool, caption_dropout: float) -> None:
        self.examples, self.batches, self.seed = list(examples), batches, seed
        self.flip, self.center_crop, self.caption_dropout = flip, center_crop, caption_dropout
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, item: int) -> dict[str, Any]:
        rows = []
        for position, index in enumerate(self.batches[item]):
            c = choices(self.seed, self.epoch, item, position, self.flip, self.center_crop, self.caption_dropout)
            rows.append((self.examples[index], c))
        return {"ct_rows": rows}


def size_ids(example: Example, crop_top_left: tuple[int, int]) -> list[int]:
    """SDXL's micro-conditioning (`add_time_ids`): original (height, width), crop (top, left), target (height,
    width), as diffusers' train_text_to_image_lora_sdxl.py computes them."""
    (width, height), (bw, bh) = example.size, example.bucket
    return [height, width, crop_top_left[0], crop_top_left[1], bh, bw]
