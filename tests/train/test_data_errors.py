"""A record or a file the job cannot use is one JobInputError naming the user's file, the line and the field, whether
🤗 Datasets could not read the file or the record failed while it was being encoded (in one or several processes)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cloudtune.errors import JobInputError
from cloudtune.spec import DataSpec
from cloudtune.train.data import PARALLEL_FROM, encode_input

CASES = {
    "bad.jsonl": (b'{"text": "a"}\n{"text": "b"\n', "s3://b/bad.jsonl, line 2: invalid JSON"),
    "cp1252.csv": ("text\nhello\ncaf\xe9 au lait\n".encode("cp1252"),
                   "s3://b/cp1252.csv: not UTF-8 text (byte 0xe9 at offset 14, line 3; it looks like Windows-1252"),
    "types.jsonl": (b'{"text": "a"}\n{"text": "b"}\n{"text": 5}\n', "s3://b/types.jsonl, line 3: field 'text' must be a str"),
    "utf16.jsonl": ('{"text": "a"}\n'.encode("utf-16"), "s3://b/utf16.jsonl: UTF-16 text, not UTF-8"),
    "missing.jsonl": (b'{"text": "a"}\n{"txt": "b"}\n',
                      "s3://b/missing.jsonl, line 2: record has no field 'text' (train.data.text_field); fields present: txt"),
    "array.json": (b'[{"text": "a"},\n {"text": "b"},\n {"text": 3}]', "s3://b/array.json, line 3: field 'text' must be a str"),
    "semicolon.csv": (b"text;label\na;1\n", "s3://b/semicolon.csv, line 1: the header 'text;label' is ';'-separated"),
    "extra.csv": (b'text\nfine\n"a","extra"\n', "s3://b/extra.csv, line 3: more values than the header has columns"),
    "empty.jsonl": (b"", "data input s3://b/empty.jsonl holds no records"),
    "no_completion.jsonl": (b'{"prompt": "p", "completion": "c"}\n{"prompt": "p"}\n',
                            "s3://b/no_completion.jsonl, line 2: record has no field 'completion' (train.data.completion_field)"),
    "no_assistant.jsonl": (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                           b'{"messages": [{"role": "user", "content": "hi"}]}\n',
                           "s3://b/no_assistant.jsonl, line 2: the conversation has no 'assistant' message"),
    "not_a_list.jsonl": (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
                         b'{"messages": "hello"}\n',
                         "s3://b/not_a_list.jsonl, line 2: field 'messages' must be a list of {role, content} messages"),
}




@pytest.mark.parametrize("name", sorted(CASES))
def test_unusable_data_is_one_line_naming_file_and_line(name: str, tokenizer, tmp_path: Path, capfd) -> None:
    raw, expected = CASES[name]
    (tmp_path / name).write_bytes(raw)
    with pytest.raises(JobInputError) as err:
        encode_input(tmp_path / name, f"s3://b/{name}", DataSpec(), tokenizer, 32)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    assert "To fix: " in str(err.value), str(err.value)  # and how to fix it
    assert "Failed to" not in capfd.readouterr().err  # the library's own log line is not printed as well


def test_an_error_in_the_middle_of_a_directory_names_its_file(tokenizer, tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(5)))
    (d / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"body": "y"}) + "\n")
    with pytest.raises(JobInputError, match=r"^gs://b/data/b\.jsonl, line 2: record has no field 'text'"):
        encode_input(d, "gs://b/data", DataSpec(), tokenizer, 32)


@pytest.mark.slow
def test_an_error_found_by_a_worker_process_names_the_line(tokenizer, tmp_path: Path) -> None:
    """Past PARALLEL_FROM records the map runs in several processes: the error still names the file and line."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the map runs in one process")
    n = PARALLEL_FROM + 10
    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
             for i in range(n)]
    lines[n - 3] = json.dumps({"messages": [{"role": "user", "content": "q"}]})
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(JobInputError, match=rf"^big\.jsonl, line {n - 2}: the conversation has no 'assistant' message"):
        encode_input(tmp_path / "big.jsonl", "big.jsonl", DataSpec(), tokenizer, 32)


def test_gzip_jsonl_is_read_as_its_text(tokenizer, tmp_path: Path) -> None:
    """🤗 Datasets reads compressed data files: a .jsonl.gz trains like its text."""
    (tmp_path / "t.jsonl").write_bytes(gzip.compress(b'{"text": "hello there"}\n{"text": "general"}\n'))
    assert encode_input(tmp_path / "t.jsonl", None, DataSpec(), tokenizer, 32).examples == 2


def test_files_whose_extra_columns_differ_still_load(tokenizer, tmp_path: Path) -> None:
    """One Arrow schema cannot hold both files; each is then loaded on its own and the examples are kept in order."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"text": "first one"}) + "\n")
    (d / "b.jsonl").write_text(json.dumps({"text": "second one", "source": "web", "id": 3}) + "\n")
    enc = encode_input(d, None, DataSpec(), tokenizer, 32)
    eos = [tokenizer.eos_token_id]
    assert enc.dataset["input_ids"][:] == [tokenizer("first one")["input_ids"] + eos,
                                           tokenizer("second one")["input_ids"] + eos]


def test_a_hub_dataset_the_job_cannot_reach_is_one_line(tokenizer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(JobInputError) as err:
        encode_input(Path("hf:acme/boats:train"), None, DataSpec(train="hf:acme/boats:train"), tokenizer, 32)
    message = str(err.value)
    assert message.startswith("hf:acme/boats:train: the Hub dataset cannot be loaded: Couldn't reach 'acme/boats'")
    assert "needs network access to the Hugging Face Hub" in message and "\n" not in message


@pytest.mark.parametrize("name, expected", [
    ("hf:acme/boats", None), ("hf:acme/boats:test", None), ("hf:squad", None),
    ("hf:acme/bad name", "is not a Hub dataset name: write hf:ORG/NAME"),
])
def test_hub_dataset_names_in_the_spec(name: str, expected: str | None) -> None:
    from cloudtune.spec import JobSpec

    raw = {"name": "hub", "train": {"model": "m", "data": {"train": name, "eval": None}}}
    if expected is None:
        assert JobSpec.model_validate(raw).train.data.train == name
    else:
        with pytest.raises(ValueError, match=expected):
            JobSpec.model_validate(raw)
    raw["train"]["task"] = "seq-classification"
    with pytest.raises(ValueError, match="causal-lm recipe only" if expected is None else expected):
        JobSpec.model_validate(raw)
