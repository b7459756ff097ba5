"""Captioned image data for text-to-image, without torch: which files and captions an input holds, the
aspect-ratio bucket each image trains in, and the header checks the preflight runs (Pillow reads each image's
header only: `Image.open` without `.load()`).

Layouts (the first that applies):
1. an imagefolder (🤗 Datasets' convention): `metadata.jsonl` or `metadata.csv` with `file_name` and a caption
   column (`text`, or `train.data.text_field`);
2. `train.data.instance_prompt` set: every image of the folder, one prompt (DreamBooth-style);
3. images with same-name `.txt` caption files (kohya / ai-toolkit convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cloudtune.data.folder_metadata import METADATA_FILES, metadata_rows
from cloudtune.errors import JobInputError

EXAMPLE_ROW = '{"file_name": "0001.png", "text": "a caption"}'  # in the fix of a bad metadata.jsonl line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_ASPECT = 4.0  # buckets go no further than 4:1 (wider images are cropped to it)


@dataclass(frozen=True)
class ImageRecord:
    """One training example: the image file, its caption and where the caption came from (`file, line N`)."""

    path: Path
    caption: str
    where: str


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _from_metadata(root: Path, meta: Path, text_field: str, shown: str) -> list[ImageRecord]:
    meta_shown = f"{shown}/{meta.name}"
    records = []
    for where, row in metadata_rows(meta, meta_shown, EXAMPLE_ROW):
        name = row.get("file_name")
        if not isinstance(name, str) or not name:
            raise JobInputError(f"{where}: no `file_name`; each row names its image relative to {shown}, as 🤗 "
                                f"Datasets' imagefolder reads it. To fix: add file_name to the row")
        caption = row.get(text_field)
        if not isinstance(caption, str) or not caption.strip():
            raise JobInputError(f"{where}: image {name!r} has no caption in column {text_field!r} "
                                f"(train.data.text_field). To fix: write its caption, name the caption column in "
                                f"train.data.text_field, or set train.data.instance_prompt for one prompt for all")
        path = root / name
        if not path.is_file():
            raise JobInputError(f"{where}: file_name {name!r} is not a file under {shown}. To fix: correct the name "
                                f"or remove the row")
        records.append(ImageRecord(path, caption.strip(), where))
    named = {r.path.resolve() for r in records}
    uncaptioned = [p for p in _images(root) if p.resolve() not in named]
    if uncaptioned:
        rel = uncaptioned[0].relative_to(root).as_posix()
        more = f" (and {len(uncaptioned) - 1} more)" if len(uncaptioned) > 1 else ""
        raise JobInputError(f"{shown}/{rel}{more}: no caption: {meta_shown} has no row for it, so it would not be "
                            f"trained on. To fix: add a row for it (e.g. {{\"file_name\": \"{rel}\", "
                            f"\"{text_field}\": \"a caption\"}}), or move it out of {shown}")
    return records


def image_records(root: Path, text_field: str = "text", instance_prompt: str | None = None,
                  shown: str | None = None) -> list[ImageRecord]:
    """The (image, caption) examples of the input dir `root` (named `shown` in errors), in file order.

    Raises JobInputError (the file, the line and the fix) for a missing input, no images, a metadata row without
    an image or a caption, an image the metadata has no row for, or an image without a `.txt` caption (when neither metadata nor instance_prompt is
    given)."""
    root, shown = Path(root), shown or str(root)
    if not root.is_dir():
        raise JobInputError(f"image input {shown} is not a directory; give a folder of images with "
                            f"metadata.jsonl, same-name .txt captions, or train.data.instance_prompt")
    metas = [root / m for m in METADATA_FILES if (root / m).is_file()]
    if metas:
        records = _from_metadata(root, metas[0], text_field, shown)
    else:
        files = _images(root)
        if instance_prompt is not None:
            records = [ImageRecord(p, instance_prompt, "train.data.instance_prompt") for p in files]
        else:
            records = [_txt_record(p, root, shown) for p in files]
    if not records:
        raise JobInputError(f"image input {shown} holds no images ({', '.join(IMAGE_EXTENSIONS)}). To fix: put the "
                            f"training images there")
    return records


def _txt_record(image: Path, root: Path, shown: str) -> ImageRecord:
    txt = image.with_suffix(".txt")
    rel = image.relative_to(root).as_posix()
    if not txt.is_file():
        raise JobInputError(f"{shown}/{rel}: no caption: neither metadata.jsonl/metadata.csv in {shown} nor "
                            f"{Path(rel).with_suffix('.txt').as_posix()} beside the image. To fix: write the caption "
                            f"in that .txt file, add a metadata.jsonl (file_name, text), or set "
                            f"train.data.instance_prompt")
    caption = txt.read_text(encoding="utf-8", errors="replace").strip()
    if not caption:
        raise JobInputError(f"{shown}/{Path(rel).with_suffix('.txt').as_posix()}: the caption is empty. To fix: "
                            f"write the caption, or set train.data.instance_prompt")
    return ImageRecord(image, caption, f"{shown}/{rel}")


def bucket_step(resolution: int) -> int:
    """The granularity of bucket sides: 64 pixels (SD's latent 8 x the UNet's 3 downsamplings), 8 below 256 px."""
    return 64 if resolution >= 256 else 8


def bucket_for(width: int, height: int, resolution: int, bucketing: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of the bucket an image of `width` x `height` trains in: about `resolution`^2
    pixels at the image's aspect ratio (capped at 4:1), sides multiples of `bucket_step`; square
    `resolution` x `resolution` when bucketing is off."""
    if not bucketing:
        return resolution, resolution
    step = bucket_step(resolution)
    aspect = min(max(width / height, 1 / MAX_ASPECT), MAX_ASPECT)
    bw = max(step, int(round(resolution * math.sqrt(aspect) / step)) * step)
    bh = max(step, int(round(resolution / math.sqrt(aspect) / step)) * step)
    return bw, bh


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header (Pillow reads no pixels); raises JobInputError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise JobInputError(f"{path}: not a readable image ({exc}). To fix: re-save it as PNG or JPEG, or remove "
                            f"it (and its caption)") from None


def image_problems(root: Path, text_field: str, instance_prompt: str | None, resolution: int, bucketing: bool,
                   shown: str, limit: int = 20) -> list[str]:
    """Header checks of every image of the input (one line each, at most `limit`): unreadable files, missing
    captions, images smaller than their training bucket (they would be upscaled: blurry samples)."""
    try:
        records = image_records(root, text_field, instance_prompt, shown)
    except JobInputError as exc:
        return [str(exc)]
    problems: list[str] = []
    for rec in records:
        rel = f"{shown}/{rec.path.relative_to(root).as_posix()}"
        try:
            width, height = header_size(rec.path)
        except JobInputError as exc:
            problems.append(str(exc).replace(str(rec.path), rel, 1))
            continue
        bw, bh = bucket_for(width, height, resolution, bucketing)
        if width < bw or height < bh:
            problems.append(f"{rel}: {width}x{height} pixels is smaller than its training size {bw}x{bh} "
                            f"(train.hyperparameters.resolution {resolution}). To fix: use a larger image, remove "
                            f"it, or lower resolution")
        if len(problems) >= limit:
            problems.append(f"(first {limit} image problems shown)")
            break
    return problems
