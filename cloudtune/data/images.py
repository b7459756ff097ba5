"""Captioned image data for text-to-image, without torch: which files and captions an input holds, the
aspect-ratio bucket each image trains in, and the checks the preflight runs: each image's header (size, EXIF
orientation) and that the file is whole (`check_whole`: no full-size decoding), one line per image naming all of
its problems (its row or caption, and its file).

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

from cloudtune.data.folder_metadata import Problem, file_under, metadata_file, metadata_rows, one_line, outside_problem
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


NO_TXT_FIX = "write the caption in that .txt file, add a metadata.jsonl (file_name, text), or set " \
             "train.data.instance_prompt"
NO_CAPTION_FIX = "write its caption, name the caption column in train.data.text_field, or set " \
                 "train.data.instance_prompt for one prompt for all"
GROUPED_FIXES = (NO_TXT_FIX, NO_CAPTION_FIX)
"""The fixes of a missing caption: images whose one problem it is are named in one line (a misnamed caption column
or a folder without captions would otherwise take a line per image)."""


@dataclass(frozen=True)
class _Example:
    """One image as its layout names it, before it is checked: the file (None when its row names none, or for the
    line that stands for the images a metadata file has no row for), its caption (None when it has none), where
    its record comes from, and what is wrong with its row or caption, most fundamental first."""

    path: Path | None
    caption: str | None
    where: str
    problems: tuple[Problem, ...] = ()


def _from_metadata(root: Path, meta: Path, text_field: str, shown: str) -> list[_Example]:
    """The examples of the metadata file's rows, then one for the images it has no row for (if any)."""
    meta_shown = f"{shown}/{meta.name}"
    examples = [_row_example(root, where, row, text_field, shown)
                for where, row in metadata_rows(meta, meta_shown, EXAMPLE_ROW)]
    named = {e.path.resolve() for e in examples if e.path is not None}
    uncaptioned = [p for p in _images(root) if p.resolve() not in named]
    if uncaptioned:
        rel = uncaptioned[0].relative_to(root).as_posix()
        more = f" (and {len(uncaptioned) - 1} more)" if len(uncaptioned) > 1 else ""
        examples.append(_Example(None, None, f"{shown}/{rel}{more}", (Problem(
            f"{shown}/{rel}{more}", f"no caption: {meta_shown} has no row for it, so it would not be trained on",
            f'add a row for it (e.g. {{"file_name": "{rel}", "{text_field}": "a caption"}}), or move it out of '
            f"{shown}"),)))
    return examples


def _row_example(root: Path, where: str, row: dict, text_field: str, shown: str) -> _Example:
    """One metadata row's example, with every problem of the row: no `file_name` (or one outside the folder, or
    naming no file), and no caption."""
    name, caption = row.get("file_name"), row.get(text_field)
    path, problems = None, []
    if not isinstance(name, str) or not name:
        problems.append(Problem(where, f"no `file_name`; each row names its image relative to {shown}, as 🤗 "
                                       f"Datasets' imagefolder reads it", "add file_name to the row"))
    else:
        outside = outside_problem(name, where, shown)
        if outside is not None:
            problems.append(outside)
        else:
            path = file_under(root, name, where, shown)
            if not path.is_file():
                problems.append(Problem(where, f"file_name {name!r} is not a file under {shown}",
                                        "correct the name or remove the row"))
    if not isinstance(caption, str) or not caption.strip():
        image = f"image {name!r} has" if isinstance(name, str) and name else "it has"
        problems.append(Problem(where, f"{image} no caption in column {text_field!r} (train.data.text_field)",
                                NO_CAPTION_FIX))
    return _Example(path, caption.strip() if isinstance(caption, str) else None, where, tuple(problems))


def _examples(root: Path, text_field: str, instance_prompt: str | None, shown: str) -> list[_Example]:
    """The examples of the input dir `root` in file order (see the module docstring for the layouts). JobInputError
    for what is wrong with the input as a whole: not a directory, a bad metadata file, no images."""
    if not root.is_dir():
        raise JobInputError(f"image input {shown} is not a directory: task text-to-image reads a folder of images. "
                            f"To fix: name the folder holding the images (with metadata.jsonl, same-name .txt captions "
                            f"or train.data.instance_prompt) in `inputs:`, not one file or an archive")
    meta = metadata_file(root, shown)
    if meta is not None:
        examples = _from_metadata(root, meta, text_field, shown)
    elif instance_prompt is not None:
        examples = [_Example(p, instance_prompt, "train.data.instance_prompt") for p in _images(root)]
    else:
        examples = [_txt_example(p, root, shown) for p in _images(root)]
    if not examples:
        raise JobInputError(f"image input {shown} holds no images ({', '.join(IMAGE_EXTENSIONS)}). To fix: put the "
                            f"training images there")
    return examples


def image_records(root: Path, text_field: str = "text", instance_prompt: str | None = None,
                  shown: str | None = None) -> list[ImageRecord]:
    """The (image, caption) examples of the input dir `root` (named `shown` in errors), in file order.

    Raises JobInputError (the file, the line and the fix) for a missing input, no images, a metadata row without
    an image or a caption (one line naming every problem of the first such row), an image the metadata has no row
    for, or an image without a `.txt` caption (when neither metadata nor instance_prompt is given)."""
    root = Path(root)
    examples = _examples(root, text_field, instance_prompt, shown or str(root))
    for example in examples:
        if example.problems:
            raise JobInputError(one_line(example.problems))
    return [ImageRecord(e.path, e.caption, e.where) for e in examples if e.path is not None and e.caption is not None]


def _txt_example(image: Path, root: Path, shown: str) -> _Example:
    """An image of the `.txt` caption layout: its caption, or the problem of a missing or empty `.txt` file."""
    txt = image.with_suffix(".txt")
    rel = image.relative_to(root).as_posix()
    txt_rel = Path(rel).with_suffix(".txt").as_posix()
    if not txt.is_file():
        return _Example(image, None, f"{shown}/{rel}", (Problem(
            f"{shown}/{rel}", f"no caption: neither metadata.jsonl/metadata.csv in {shown} nor {txt_rel} beside the "
                              f"image", NO_TXT_FIX),))
    caption = txt.read_text(encoding="utf-8-sig", errors="replace").strip()  # Notepad writes a BOM
    if not caption:
        return _Example(image, None, f"{shown}/{rel}", (Problem(
            f"{shown}/{txt_rel}", "the caption is empty", "write the caption, or set train.data.instance_prompt"),))
    return _Example(image, caption, f"{shown}/{rel}")


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


UNREADABLE_FIX = "re-save it as PNG or JPEG, or remove it (and its caption)"
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF Orientation values (tag 0x0112) that turn the stored image by 90 degrees: it shows with width and height
swapped (the EXIF 2.32 spec; what `PIL.ImageOps.exif_transpose` undoes)."""
TOO_LARGE_FIX = "downscale it (e.g. to 4096 pixels on its long side)"


class ImageFileError(JobInputError):
    """An image file that cannot be used (not an image, damaged, too large to decode): one JobInputError line
    naming the file and the fix; `problem` holds those parts, so that a check can name it in the same line as the
    other problems of its example (a missing caption)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(one_line([problem]))
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[Problem]]:  # pickled (a worker process's error) from its parts
        return type(self), (self.problem,)


@contextmanager
def opened_image(path: Path, shown: str | None = None) -> Iterator[Any]:
    """`PIL.Image.open(path)`, with every way the file can fail to read as one ImageFileError naming it (`shown`, or
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
        raise ImageFileError(Problem(name, f"the image is too large to decode ({pixels} pixels; Pillow refuses more "
                                           f"than {2 * (Image.MAX_IMAGE_PIXELS or 0)})", TOO_LARGE_FIX)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageFileError(Problem(name, f"not a readable image ({exc})", UNREADABLE_FIX)) from None


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
    format decoded. ImageFileError naming the file otherwise."""
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
            raise ImageFileError(Problem(shown or str(path), f"a damaged image ({exc})", UNREADABLE_FIX)) from None
    return size


def image_problems(root: Path, text_field: str, instance_prompt: str | None, resolution: int, bucketing: bool,
                   shown: str, limit: int = 20) -> list[str]:
    """One line per image with problems (at most `limit`), naming all of that image's problems: its row or caption
    (no file, no caption), an unreadable or damaged file, a size under its training bucket (it would be upscaled:
    blurry samples). What is wrong with the input as a whole (not a folder, a bad metadata file, no images) is the
    one line."""
    try:
        examples = _examples(Path(root), text_field, instance_prompt, shown)
    except JobInputError as exc:
        return [str(exc)]
    problems: list[str] = []
    grouped: dict[str, list[Problem]] = {}  # fix -> the images whose one problem is that missing caption
    for example in examples:
        found = list(example.problems)
        if example.path is not None and example.path.is_file():
            header = _header_problem(example.path, f"{shown}/{example.path.relative_to(root).as_posix()}", resolution,
                                     bucketing)
            found += [header] if header is not None else []
        if len(found) == 1 and found[0].fix in GROUPED_FIXES:
            problems += [] if found[0].fix in grouped else [found[0].fix]  # its place in the listing
            grouped.setdefault(found[0].fix, []).append(found[0])
        elif found:
            problems.append(one_line(found))
        if len(problems) >= limit:
            problems.append(f"(first {limit} image problems shown)")
            break
    return [_grouped(grouped[line], shown) if line in grouped else line for line in problems]


def _grouped(same: list[Problem], shown: str) -> str:
    """The one line for the images without a caption of one kind: the first named, then how many more."""
    if len(same) == 1:
        return one_line(same)
    first = same[0]
    what = (f"no caption: neither metadata.jsonl/metadata.csv in {shown} nor a same-name .txt file beside each image"
            if first.fix == NO_TXT_FIX else first.what)
    more = f"{len(same) - 1} more rows" if first.fix == NO_CAPTION_FIX else f"{len(same) - 1} more"
    return one_line([Problem(f"{first.where} (and {more})", what, first.fix)])


def _header_problem(path: Path, rel: str, resolution: int, bucketing: bool) -> Problem | None:
    """What is wrong with the image file itself, named `rel`: unreadable or damaged, or smaller than its training
    bucket; None when nothing is."""
    try:
        width, height = check_whole(path, rel)
    except ImageFileError as exc:
        return exc.problem
    bw, bh = bucket_for(width, height, resolution, bucketing)
    if width < bw or height < bh:
        return Problem(rel, f"{width}x{height} pixels is smaller than its training size {bw}x{bh} "
                            f"(train.hyperparameters.resolution {resolution})",
                       "use a larger image, remove it, or lower resolution")
    return None
