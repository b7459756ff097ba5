"""The metadata file of an imagefolder or audiofolder input, one reader for both (cloudtune.data.folder_metadata):
every way a metadata.jsonl / metadata.csv goes wrong is one line naming the file and line with the fix, and a
spreadsheet's byte order mark or a CSV's rows read as the Datasets convention says."""

from __future__ import annotations

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
