"""Captioned image data for text-to-image, without torch: which files and captions an input holds, the
aspect-ratio bucket each image trains in, and the checks the preflight runs: each image's header (size, EXIF
orientation) and that the file is whole (`check_whole`: no full-size decoding).

Layouts (the first that applies):
1. an imagefolder (🤗 Datasets' convention): `metadata.jsonl` or `metadata.csv` with `file_name` and a caption
   column (`text`, or `train.data.text_field`);
2. `train.data.instance_prompt` set: every image of the folder, one prompt (DreamBooth-style);
3. images with same-name `.txt` caption files (kohya / ai-toolkit convention).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.data.folder_metadata import file_under, metadata_file, metadata_rows
from cloudtune.errors import JobInputError

EXAMPLE_ROW = '{"file_name": "0001.png", "text": "a caption"}'  # in the fix of a bad metadata.jsonl line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # what Pillow reads
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
        path = file_under(root, name, where, shown)
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
        raise JobInputError(f"image input {shown} is not a directory: task text-to-image reads a folder of images. "
                            f"To fix: name the folder holding the images (with metadata.jsonl, same-name .txt captions "
                            f"or train.data.instance_prompt) in `inputs:`, not one file or an archive")
    meta = metadata_file(root, shown)
    if meta is not None:
        records = _from_metadata(root, meta, text_field, shown)
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
    caption = txt.read_text(encoding="utf-8-sig", errors="replace").strip()  # Notepad writes a BOM
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


UNREADABLE_FIX = "To fix: re-save it as PNG or JPEG, or remove it (and its caption)"
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF Orientation values (tag 0x0112) that turn the stored image by 90 degrees: it shows with width and height
swapped (the EXIF 2.32 spec; what `PIL.ImageOps.exif_transpose` undoes)."""
TOO_LARGE_FIX = "To fix: downscale it (e.g. to 4096 pixels on its long side)"


@contextmanager
def opened_image(path: Path, shown: str | None = None) -> Iterator[Any]:
    """`PIL.Image.open(path)`, with every way the file can fail to read as one JobInputError naming it (`shown`, or
    the path) and the fix: not an image, a damaged file, or an image over Pillow's decompression-bomb limit
    (`Image.MAX_IMAGE_PIXELS` x 2, about 179 megapixels). Pillow's warning between that limit and half of it is not
    shown: the data is the user's own."""
    from PIL import Image, UnidentifiedImageError

    name = shown or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except JobInputError:
        raise
    except Image.DecompressionBombError as exc:
        pixels = str(exc).split("(", 1)[-1].split(" ", 1)[0]
        raise JobInputError(f"{name}: the image is too large to decode ({pixels} pixels; Pillow refuses more than "
                            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)}). {TOO_LARGE_FIX}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise JobInputError(f"{name}: not a readable image ({exc}). {UNREADABLE_FIX}") from None


def shown_size(img: Any) -> tuple[int, int]:
    """(width, height) of the image as viewers show it: the stored size, swapped when its EXIF orientation turns
    it by 90 degrees (phone photos). Read from the header: no pixels are decoded."""
    if img.format == "PNG" and "exif" not in img.info:  # a PNG's eXIf chunk precedes its pixels, or is absent:
        orientation = None  # getexif() would decode the whole image to look after them
    else:
        orientation = img.getexif().get(0x0112)
    width, height = int(img.width), int(img.height)
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image shows (EXIF orientation applied), from its header (Pillow decodes no pixels);
    raises JobInputError when unreadable."""
    with opened_image(path) as img:
        return shown_size(img)


def check_whole(path: Path, shown: str | None = None) -> tuple[int, int]:
    """(width, height) as `header_size`, after checking the file is whole (a truncated copy or download): a PNG's
    chunk checksums (`verify`, no decoding), a JPEG's compressed data decoded at 1/8 scale (`draft`), any other
    format decoded. JobInputError naming the file otherwise."""
    with opened_image(path, shown) as img:
        size = shown_size(img)
        fmt = img.format
        try:
            if fmt == "PNG":
                img.verify()
            else:
                if fmt == "JPEG":
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise JobInputError(f"{shown or path}: a damaged image ({exc}). {UNREADABLE_FIX}") from None
    return size


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
            width, height = check_whole(rec.path, rel)
        except JobInputError as exc:
            problems.append(str(exc))
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
