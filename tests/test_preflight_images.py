"""Plan-time checks of text-to-image jobs (torch-free): the spec's rules, every image's header and caption, the
pipeline dir, CUDA-only options; the layouts, buckets and the collapse measure they rest on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloudtune.data.images import bucket_for, image_problems, image_records
from cloudtune.errors import JobInputError, SpecError
from cloudtune.preflight import PreflightError, check_spec_inputs
from cloudtune.spec import load_spec, validate_spec

from tests.tiny_diffusion import make_colour_images


def pipeline_dir(path: Path) -> Path:
    """A pipeline dir as save_pretrained lays it out (the preflight reads model_index.json and the subdir names)."""
    path.mkdir(parents=True)
    parts = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDPMScheduler"]}
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **parts}))
    for part in parts:
        (path / part).mkdir()
        if part in ("unet", "vae", "text_encoder"):  # the weights the preflight looks for (never loaded)
            (path / part / "model.safetensors").write_bytes(b"\0" * 2048)
    return path


def image_spec(tmp: Path, train: dict | None = None, accelerator: str = "cpu", data: str = "images"):
    body = {"task": "text-to-image", "model": "./pipe", "lora": {"r": 4},
            "hyperparameters": {"resolution": 32}} | (train or {})
    return validate_spec({"name": "img", "inputs": {"train": f"./{data}"}, "resources": {"accelerator": accelerator},
                          "train": body}, base_dir=tmp)


def problems_of(tmp: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> list[str]:
    from cloudtune.jobinputs import with_model_input

    monkeypatch.chdir(tmp)
    if not (tmp / "pipe").exists():
        pipeline_dir(tmp / "pipe")
    try:
        check_spec_inputs(with_model_input(image_spec(tmp, **kw)))  # type: ignore[arg-type]
    except PreflightError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("layout", ["metadata", "csv", "txt"])
def test_each_caption_layout_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    make_colour_images(tmp_path / "images", layout=layout)
    assert problems_of(tmp_path, monkeypatch) == []
    records = image_records(tmp_path / "images")
    assert len(records) == 16 and {r.caption for r in records} == {f"a {c} square" for c in
                                                                     ("red", "green", "blue", "yellow")}


def test_subject_folder_takes_the_instance_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_colour_images(tmp_path / "images", layout="subject")
    missing = problems_of(tmp_path, monkeypatch)
    assert len(missing) == 1 and "blue_0.png (and 15 more): no caption" in missing[0], missing  # one line for all
    assert "instance_prompt" in missing[0]
    assert problems_of(tmp_path, monkeypatch, train={"data": {"instance_prompt": "a photo of sks dog"}}) == []


def test_unreadable_small_and_uncaptioned_images_are_named_with_the_fix(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    images = make_colour_images(tmp_path / "images", layout="txt")
    (images / "red_1.png").write_bytes(b"not a png at all")
    from PIL import Image

    Image.new("RGB", (16, 40)).save(images / "green_0.png")
    (images / "blue_2.txt").unlink()
    found = problems_of(tmp_path, monkeypatch)
    assert found[0].startswith("images/blue_2.png: no caption") and len(found) == 3, found  # the listing goes on
    (images / "blue_2.txt").write_text("a blue square")
    found = problems_of(tmp_path, monkeypatch)
    assert any(p.startswith("images/red_1.png: not a readable image") and "To fix" in p for p in found), found
    assert any(p.startswith("images/green_0.png: 16x40 pixels is smaller than its training size") for p in found)
    assert len(found) == 2


def test_metadata_rows_are_checked_with_their_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = make_colour_images(tmp_path / "images")
    lines = (images / "metadata.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"file_name": "red_2.png", "caption": "x"})
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    found = problems_of(tmp_path, monkeypatch)
    assert found == [f"images/metadata.jsonl, line 3: image 'red_2.png' has no caption in column 'text' "
                     f"(train.data.text_field). To fix: write its caption, name the caption column in "
                     f"train.data.text_field, or set train.data.instance_prompt for one prompt for all"]
    misnamed = problems_of(tmp_path, monkeypatch, train={"data": {"text_field": "caption"}})
    assert len(misnamed) == 1 and misnamed[0].startswith(  # one line for the rows without that column, not 15
        "images/metadata.jsonl, line 1 (and 14 more rows): image 'red_0.png' has no caption in column 'caption'")


@pytest.mark.parametrize("meta", ["metadata.jsonl", "metadata.csv"])
def test_an_image_without_a_metadata_row_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    meta: str) -> None:
    """An image the metadata file does not name has no caption: refused, not silently left out of training."""
    images = make_colour_images(tmp_path / "images", layout="csv" if meta.endswith("csv") else "metadata")
    lines = (images / meta).read_text().splitlines()
    (images / meta).write_text("\n".join(line for line in lines if "red_1.png" not in line) + "\n")
    found = problems_of(tmp_path, monkeypatch)
    assert len(found) == 1 and found[0].startswith(f"images/red_1.png: no caption: images/{meta} has no row")
    assert 'To fix: add a row for it (e.g. {"file_name": "red_1.png"' in found[0]


def test_model_must_be_a_unet_pipeline_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_colour_images(tmp_path / "images")
    pipe = pipeline_dir(tmp_path / "pipe")
    shutil.rmtree(pipe / "vae")
    assert problems_of(tmp_path, monkeypatch) == [
        "pipe: no vae/ subdir, which model_index.json lists. To fix: save the whole pipeline with save_pretrained"]


@pytest.mark.parametrize("train, words", [
    ({"hyperparameters": {"resolution": 32, "optimizer": "adamw_8bit"}}, "optimizer adamw_8bit needs a CUDA GPU"),
    ({"lora": {"r": 4, "quantize": "4bit"}}, "4bit (NF4 base weights) needs a CUDA GPU"),
])
def test_cuda_only_options_are_refused_on_cpu_and_pass_on_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               train: dict, words: str) -> None:
    make_colour_images(tmp_path / "images")
    found = problems_of(tmp_path, monkeypatch, train=train)
    assert len(found) == 1 and words in found[0] and "To fix" in found[0]
    assert problems_of(tmp_path, monkeypatch, train=train, accelerator="L4:1") == []


@pytest.mark.parametrize("train, words", [
    ({"lora": None}, "trains a LoRA on the denoiser"),
    ({"data": {"packing": True}}, "train.data.packing applies to the text tasks"),
    ({"hyperparameters": {"resolution": 33}}, "must be a multiple of 8"),
    ({"distributed": "fsdp"}, "distributed: ddp"),
    ({"data": {"instance_prompt": " "}}, "train.data.instance_prompt: is empty, which would train every image on the "
                                         "empty prompt"),
    ({"data": {"text_field": ""}}, "train.data.text_field: is empty; name the record field"),
])
def test_spec_refuses_what_text_to_image_cannot_take(tmp_path: Path, train: dict, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        image_spec(tmp_path, train)


def test_image_options_on_a_text_task_are_refused(tmp_path: Path) -> None:
    for body in ({"validation": {"prompts": ["x"]}}, {"hyperparameters": {"resolution": 512}},
                 {"data": {"random_flip": True}}):
        with pytest.raises(SpecError, match="applies to task text-to-image only") as err:
            validate_spec({"name": "t", "inputs": {"train": "./d"}, "train": {"model": "gpt2", **body}},
                          base_dir=tmp_path)
        assert "set task: text-to-image" in err.value.issues[0].hint


def test_image_option_on_a_text_task_names_its_own_line(tmp_path: Path) -> None:
    """The refusal raised on `train` points at the line of the option to remove, with its fix."""
    path = tmp_path / "job.yaml"
    path.write_text("name: t\ninputs: {train: ./d}\ntrain:\n  model: gpt2\n  task: causal-lm\n"
                    "  validation: {prompts: [a red square]}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    (issue,) = err.value.issues
    assert (issue.path, issue.line) == ("train.validation", 6) and "remove it" in issue.hint


def test_text_specs_dump_as_before() -> None:
    """New options are left out of a text job's dump (golden requests and job JSON unchanged)."""
    from cloudtune.spec import TrainSpec

    dumped = TrainSpec.model_validate({"model": "gpt2", "lora": {}}).model_dump()
    assert "validation" not in dumped and "text_encoders" not in dumped["lora"]
    assert not {"resolution", "snr_gamma", "noise_offset", "optimizer", "cache_latents"} & set(dumped["hyperparameters"])
    assert not {"instance_prompt", "random_flip", "center_crop", "bucketing", "caption_dropout"} & set(dumped["data"])


@pytest.mark.parametrize("size, resolution, bucket", [
    ((512, 512), 512, (512, 512)), ((768, 512), 512, (640, 448)), ((512, 1024), 512, (384, 704)),
    ((4000, 100), 512, (1024, 256)), ((32, 32), 32, (32, 32)), ((48, 32), 32, (40, 24)),
])
def test_buckets_keep_the_aspect_ratio_at_about_the_area(size: tuple, resolution: int, bucket: tuple) -> None:
    assert bucket_for(*size, resolution) == bucket
    assert bucket_for(*size, resolution, bucketing=False) == (resolution, resolution)


def test_missing_input_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(JobInputError, match="is not a directory"):
        image_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert image_problems(tmp_path / "empty", "text", None, 32, True, "empty")[0].startswith(
        "image input empty holds no images")


def test_collapse_measure_fires_on_identical_samples_and_not_on_varied_ones() -> None:
    pytest.importorskip("torch")
    from PIL import Image

    from cloudtune.train.image_validation import collapse_warning, image_distance

    varied = [Image.new("RGB", (32, 32), c) for c in ((200, 20, 20), (20, 200, 20), (20, 20, 200), (90, 90, 90))]
    base = image_distance(varied)
    assert base is not None and base > 0.2
    collapsed = [Image.new("RGB", (32, 32), (120, 60, 60))] * 3 + [Image.new("RGB", (32, 32), (121, 60, 60))]
    warning = collapse_warning(40, image_distance(collapsed), base, 0.25)
    assert warning is not None and warning.startswith("collapse at step 40:") and "learning_rate" in warning
    assert collapse_warning(40, image_distance(varied[:3]), base, 0.25) is None
    assert collapse_warning(40, image_distance(collapsed), None, 0.25) is None  # no base: nothing to compare


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says `width` x `height` (the pixels are never decoded by the checks that refuse it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("damage", ["truncated png", "truncated jpeg", "too large", "not an image"])
def test_a_file_that_cannot_be_decoded_is_refused_at_plan_time_and_named_in_the_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    """Every way an image fails to decode is one line naming the file with the fix: before the job (the preflight
    checks each file is whole: a copy or download cut short is the common case) and, for a file that changed after
    the plan, in the job itself (a JobInputError, not a traceback)."""
    from PIL import Image

    from cloudtune.train.image_data import load_pixels

    images = make_colour_images(tmp_path / "images", layout="txt")
    target = images / ("red_1.jpg" if damage == "truncated jpeg" else "red_1.png")
    if damage == "truncated jpeg":
        (images / "red_1.png").unlink()
        Image.effect_noise((64, 64), 60).convert("RGB").save(target, quality=95)
    if damage.startswith("truncated"):
        whole = target.read_bytes()
        target.write_bytes(whole[: len(whole) * 2 // 3])
    elif damage == "too large":
        _png_header_only(target, 20000, 20000)
    else:
        target.write_bytes(b"GIF89a and then nothing")
    expected = {"too large": "the image is too large to decode (400000000 pixels; Pillow refuses more than "
                             "178956970). To fix: downscale it"}.get(damage, "To fix: re-save it as PNG or JPEG")
    [problem] = problems_of(tmp_path, monkeypatch)
    assert problem.startswith(f"images/{target.name}: ") and expected in problem, problem
    with pytest.raises(JobInputError, match=rf"{target.name}: .*{expected.split(' (')[0][:30]}"):
        load_pixels(target, (32, 32), (0.5, 0.5), False)


def test_a_photo_trains_the_way_up_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    """A phone photo stored landscape with EXIF Orientation 6 (turned 90 degrees) is a portrait: its size, its
    bucket and its pixels are the upright image's, as diffusers' scripts (ImageOps.exif_transpose) train it."""
    import numpy as np
    from PIL import Image

    from cloudtune.data.images import check_whole, header_size
    from cloudtune.train.image_data import load_pixels

    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    assert header_size(tmp_path / "photo.jpg") == check_whole(tmp_path / "photo.jpg") == (32, 64)
    bucket = bucket_for(32, 64, 32)
    assert bucket[0] < bucket[1]  # a portrait bucket
    pixels, _ = load_pixels(tmp_path / "photo.jpg", bucket, (0.5, 0.5), False)
    assert tuple(pixels.shape) == (3, bucket[1], bucket[0])
    top, bottom = pixels[:, 1, bucket[0] // 2], pixels[:, -2, bucket[0] // 2]
    assert top[0] > 0.8 and top[2] < -0.8 and bottom[2] > 0.8 and bottom[0] < -0.8  # turned: red on top, blue below


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_greyscale_keeps_its_tone(tmp_path: Path, mode: str) -> None:
    """16-bit greyscale images train at their tone, scaled to 8 bits (Pillow's own RGB conversion clips them white)."""
    import numpy as np
    from PIL import Image

    from cloudtune.train.image_data import load_pixels

    values = np.full((32, 32), 20000, np.uint16)
    name = "grey.png" if mode == "I;16" else "grey.tif"  # PNG keeps 16 bits as I;16, TIFF as 32-bit I
    img = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32), "I")
    img.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    pixels, _ = load_pixels(tmp_path / name, (32, 32), (0.5, 0.5), False)
    assert abs(pixels.mean().item() - (20000 / 65535 * 2 - 1)) < 0.01


def test_every_format_pillow_reads_takes_a_txt_caption(tmp_path: Path) -> None:
    """What counts as an image is one list for every layout: a captioned .gif or .tif is trained, not dropped."""
    from PIL import Image

    from cloudtune.data.images import IMAGE_EXTENSIONS

    for ext in IMAGE_EXTENSIONS:
        Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / f"a{ext}")
        (tmp_path / f"a{ext}").rename(tmp_path / f"img_{ext[1:]}{ext}")
        (tmp_path / f"img_{ext[1:]}.txt").write_text(f"a {ext} square")
    assert sorted(r.path.suffix for r in image_records(tmp_path)) == sorted(IMAGE_EXTENSIONS)


@pytest.mark.parametrize("damage, expected", [
    ("empty dir", "train.model: {pipe} is not a diffusers pipeline dir (no model_index.json in it or in one subdirectory)"),
    ("no unet weights", "pipe/unet: no weights file (*.safetensors or *.bin) in it. To fix: copy the pipeline again"),
    ("lfs pointer", "pipe/unet/model.safetensors: a Git LFS pointer, not the weights. To fix: run `git lfs pull`"),
])
def test_a_pipeline_dir_without_its_weights_is_refused_with_the_diffusers_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, expected: str) -> None:
    """An empty folder, a part without its weights (an interrupted copy) or Git LFS pointers in their place (a clone
    without `git lfs pull`) fail the job when diffusers loads it: refused before anything is uploaded."""
    from cloudtune.errors import UnsupportedSpec

    make_colour_images(tmp_path / "images")
    pipe = tmp_path / "pipe"
    if damage == "empty dir":
        pipe.mkdir()
    else:
        pipeline_dir(pipe)
        weights = pipe / "unet/model.safetensors"
        if damage == "lfs pointer":
            weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 3438167536\n")
        else:
            weights.unlink()
    from cloudtune.jobinputs import check_local_inputs, with_model_input

    monkeypatch.chdir(tmp_path)
    with pytest.raises((UnsupportedSpec, PreflightError)) as err:  # what launch and every dry run run first
        check_local_inputs(with_model_input(image_spec(tmp_path)))  # type: ignore[arg-type]
    found = getattr(err.value, "problems", None) or [str(err.value)]
    assert len(found) == 1 and expected.format(pipe=pipe) in found[0], found


def _rewrite_row(images: Path, line: int, row: dict) -> None:
    lines = (images / "metadata.jsonl").read_text().splitlines()
    lines[line - 1] = json.dumps(row)
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_a_metadata_row_with_a_missing_file_and_no_caption_names_both(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The missing file is named with the empty caption, first, in the one line: fixing the caption alone would only
    show the missing file on the next run. The job's reader (image_records) says the same."""
    images = make_colour_images(tmp_path / "images")
    _rewrite_row(images, 3, {"file_name": "gone.png", "text": ""})
    (images / "red_2.png").unlink()
    expected = ("images/metadata.jsonl, line 3: file_name 'gone.png' is not a file under images; and image 'gone.png' "
                "has no caption in column 'text' (train.data.text_field). To fix: correct the name or remove the row; "
                "and write its caption, name the caption column in train.data.text_field, or set "
                "train.data.instance_prompt for one prompt for all")
    assert problems_of(tmp_path, monkeypatch) == [expected]
    with pytest.raises(JobInputError) as err:
        image_records(images, shown="images")
    assert str(err.value) == expected


@pytest.mark.parametrize("row, first", [
    ({"text": ""}, "no `file_name`; each row names its image relative to images"),
    ({"file_name": "../red_2.png"}, "file_name '../red_2.png' is not inside images"),
])
def test_a_row_without_a_usable_file_name_names_its_missing_caption_too(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, row: dict,
                                                                         first: str) -> None:
    images = make_colour_images(tmp_path / "images")
    _rewrite_row(images, 3, row)
    (images / "red_2.png").unlink()
    [line] = problems_of(tmp_path, monkeypatch)
    assert line.startswith(f"images/metadata.jsonl, line 3: {first}") and "has no caption in column 'text'" in line
    assert line.count("To fix:") == 1 and "; and write its caption" in line


def test_an_uncaptioned_row_names_its_unreadable_image_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = make_colour_images(tmp_path / "images")
    _rewrite_row(images, 2, {"file_name": "red_1.png", "text": " "})
    (images / "red_1.png").write_bytes(b"not a png at all")
    [line] = problems_of(tmp_path, monkeypatch)
    assert line.startswith("images/metadata.jsonl, line 2: image 'red_1.png' has no caption in column 'text' "
                           "(train.data.text_field); and images/red_1.png: not a readable image ("), line
    assert line.endswith("; and re-save it as PNG or JPEG, or remove it (and its caption)")


def test_a_txt_layout_image_names_its_caption_and_file_problems_together(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    images = make_colour_images(tmp_path / "images", layout="txt")
    (images / "blue_2.txt").unlink()
    (images / "blue_2.png").write_bytes(b"not a png at all")
    (images / "green_0.txt").write_text("\n")
    Image.new("RGB", (16, 40)).save(images / "green_0.png")
    found = problems_of(tmp_path, monkeypatch)
    assert found[0].startswith("images/blue_2.png: no caption: neither metadata.jsonl/metadata.csv in images nor "
                               "blue_2.txt beside the image; and not a readable image ("), found
    assert found[1] == ("images/green_0.txt: the caption is empty; and images/green_0.png: 16x40 pixels is smaller "
                        "than its training size 24x48 (train.hyperparameters.resolution 32). To fix: write the "
                        "caption, or set train.data.instance_prompt; and use a larger image, remove it, or lower "
                        "resolution")
    assert len(found) == 2


def test_an_instance_prompt_folder_names_every_bad_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DreamBooth layout (one prompt for every image): each image's problem is listed, not only the first."""
    from PIL import Image

    images = make_colour_images(tmp_path / "images", layout="subject")
    (images / "red_0.png").write_bytes(b"not a png at all")
    (images / "red_1.png").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(images / "yellow_3.png")
    found = problems_of(tmp_path, monkeypatch, train={"data": {"instance_prompt": "a photo of sks dog"}})
    assert [line.split(":", 1)[0] for line in found] == ["images/red_0.png", "images/red_1.png", "images/yellow_3.png"]
    assert all(line.count("To fix:") == 1 for line in found), found
