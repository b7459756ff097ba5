"""The metadata file of an imagefolder or audiofolder input, one reader for both (cloudtune.data.folder_metadata):
every way a metadata.jsonl / metadata.csv goes wrong is one line naming the file and line with the fix, and a
spreadsheet's byte order mark or a CSV's rows read as the Datasets convention says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.data.audio import find_clips
from cloudtune.data.images import image_records
from cloudtune.errors import JobInputError

READERS = {"images": (lambda root: image_records(root), "a.png"), "audio": (lambda root: find_clips(root), "a.wav")}


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize(("name", "body", "expected"), [
    ("metadata.jsonl", b'{"file_name": "F", "text": "x"}\nnot json\n', r"metadata.jsonl, line 2: not a JSON object .*To fix: write one object per line"),
    ("metadata.jsonl", b'["F", "x"]\n', r"metadata.jsonl, line 1: a JSON object is needed, found list"),
    ("metadata.jsonl", b'{"file_name": "F", "text": "caf\xe9"}\n', r"metadata.jsonl: not UTF-8 text \(invalid continuation byte at byte \d+\). To fix: save it as UTF-8"),
    ("metadata.csv", b"file_name,text\nF,caf\xe9\n", r"metadata.csv: not UTF-8 text .*To fix: save it as UTF-8"),
])
def test_a_bad_metadata_file_is_one_line_with_file_line_and_fix(tmp_path: Path, kind: str, name: str, body: bytes,
                                                                 expected: str) -> None:
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    (tmp_path / name).write_bytes(body.replace(b"F", file_name.encode()))
    with pytest.raises(JobInputError, match=expected):
        read(tmp_path)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path, kind: str) -> None:
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    (tmp_path / "metadata.csv").write_bytes(f"\ufefffile_name,text\n{file_name},a red square\n".encode())
    [found] = read(tmp_path)
    assert found.path.name == file_name and getattr(found, "caption", getattr(found, "text", None)) == "a red square"


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("outside", ["../F", "/abs/F", "sub/../../F", "..\\F"])
def test_a_file_name_outside_the_folder_is_refused_before_the_job(tmp_path: Path, kind: str, outside: str) -> None:
    """Only the input folder goes to the job: a row naming a file outside it (absolute, or `..` out of it) is one
    line with the file and line, here, even when the file exists on this machine."""
    read, file_name = READERS[kind]
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / file_name).write_bytes(b"")  # the file exists, beside the folder
    name = outside.replace("F", file_name).replace("/abs/", f"{tmp_path}/")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": name, "text": "x"}) + "\n")
    with pytest.raises(JobInputError, match=r"metadata.jsonl, line 1: file_name .* is not inside .*data: only that "
                                            r"folder goes to the job. To fix: move the file into"):
        read(root)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_csv_rows_line_is_the_line_it_starts_on(tmp_path: Path, kind: str) -> None:
    """A quoted caption may span lines, and blank lines are no rows: errors name the row's own first line."""
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    (tmp_path / "metadata.csv").write_text(f'file_name,text\n{file_name},"two\nlines"\n\n{file_name},"three\nmore\nlines"\n'
                                           f"missing{Path(file_name).suffix},x\n")
    with pytest.raises(JobInputError, match=r"metadata.csv, line 8"):
        for found in read(tmp_path):  # the audio reader names a missing file in its header check
            if not found.path.is_file():
                raise JobInputError(found.where)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_caption_keeps_unicode_line_separators_and_a_txt_caption_loses_its_bom(tmp_path: Path, kind: str) -> None:
    """JSON Lines end at \\n only (U+2028 or U+0085 inside a string is valid JSON), and a same-name .txt caption
    written by Notepad (UTF-8 with a byte order mark) reads without the mark."""
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    caption = "first\u2028second\u0085third"
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": file_name, "text": caption}, ensure_ascii=False)
                                             + "\r\n", encoding="utf-8")
    [found] = read(tmp_path)
    assert getattr(found, "caption", getattr(found, "text", None)) == caption
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / file_name).with_suffix(".txt").write_bytes("\ufeffa sine tone".encode("utf-8"))
    [found] = read(tmp_path)
    assert getattr(found, "caption", getattr(found, "text", None)) == "a sine tone"


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("name, body", [("metadata.jsonl", "\n"), ("metadata.csv", "file_name,text\n"),
                                        ("metadata.jsonl", '{"file_name": "other", "text": "x"}\n')])
def test_a_file_without_a_metadata_row_is_refused_not_dropped(tmp_path: Path, kind: str, name: str, body: str) -> None:
    """An empty metadata file (or one naming other files) leaves the folder's own files untrained: refused here with
    the file and the fix, not a job that fails (or trains on less) later."""
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    (tmp_path / "other").write_bytes(b"")
    (tmp_path / name).write_text(body)
    with pytest.raises(JobInputError, match=rf"{file_name}: no (row|caption).*(no row|To fix)"):
        read(tmp_path)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_both_metadata_files_at_once_are_refused(tmp_path: Path, kind: str) -> None:
    """metadata.jsonl beside metadata.csv (a stale export): which one holds the captions would be a guess, so it is
    refused as 🤗 Datasets' folder builders refuse it."""
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": file_name, "text": "new"}) + "\n")
    (tmp_path / "metadata.csv").write_text(f"file_name,text\n{file_name},old\n")
    with pytest.raises(JobInputError, match="both metadata.jsonl and metadata.csv; .* To fix: keep one of them"):
        read(tmp_path)


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("row", [{"text": ""}, {"file_name": "../F"}, {"file_name": "/abs/F", "text": None}])
def test_a_row_with_no_usable_file_and_no_caption_names_both_in_one_line(tmp_path: Path, kind: str, row: dict) -> None:
    """Both readers: a row whose file_name is missing (or outside the folder) and whose caption is missing is one
    error naming both, with one "To fix:" holding both fixes."""
    read, file_name = READERS[kind]
    (tmp_path / file_name).write_bytes(b"")
    body = {k: (v.replace("F", file_name) if isinstance(v, str) else v) for k, v in row.items()}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(body) + "\n")
    with pytest.raises(JobInputError) as err:
        read(tmp_path)
    text = str(err.value)
    assert "metadata.jsonl, line 1: " in text.split("; and ")[0], text
    assert "file_name" in text.split("; and ")[0] and ("no caption" in text or "no description" in text), text
    assert text.count("To fix:") == 1 and "; and " in text.split("To fix:")[1]


def test_one_line_names_every_problem_with_its_fix() -> None:
    from cloudtune.data.folder_metadata import Problem, one_line

    one = one_line([Problem("a.csv, line 2", "no file_name", "add it")])
    assert one == "a.csv, line 2: no file_name. To fix: add it"
    both = one_line([Problem("m, line 2", "no such file", "add the file"),
                     Problem("m, line 2", "no caption", "write it"),
                     Problem("img.png", "not a readable image", "add the file")])
    assert both == ("m, line 2: no such file; and no caption; and img.png: not a readable image. To fix: add the file; "
                    "and write it")
    with pytest.raises(ValueError):
        one_line([])
