"""Data shapes (text / instruction / chat) x file types (JSONL / JSON / CSV / Parquet / a directory), label masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.spec import DataSpec
from cloudtune.train.data import (
    IGNORE, chat_segments, detect_format, encode_records, pack, pad_count, read_records,
)

from .conftest import CHATS, INSTRUCTIONS, SHAPES, write_records

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _encode(path: Path, tokenizer, **data):
    spec = DataSpec(**data)
    return encode_records(read_records(path, spec.text_field), spec, tokenizer, 128)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_reads_the_same_from_every_file_type_and_a_directory(shape: str, tokenizer, tmp_path: Path) -> None:
    records = SHAPES[shape]
    encoded = {}
    for suffix in SUFFIXES:
        ds, fmt, dropped = _encode(write_records(tmp_path / f"one{suffix}", records), tokenizer)
        assert fmt == shape and dropped == 0 and len(ds) == len(records), suffix
        encoded[suffix] = ds.examples
    # a directory of mixed files: read in sorted order, recursively
    d = tmp_path / "dir"
    write_records(d / "a.csv", records[:8])
    write_records(d / "b" / "c.parquet", records[8:16])
    write_records(d / "d.jsonl", records[16:])
    (d / ".hidden.jsonl").write_text("not json\n")
    ds, fmt, _ = _encode(d, tokenizer)
    assert fmt == shape
    encoded["dir"] = ds.examples
    first = encoded[".jsonl"]
    for name, examples in encoded.items():
        assert examples == first, name
    # explicit format agrees with detection
    assert _encode(tmp_path / "one.jsonl", tokenizer, format=shape)[0].examples == first


def test_text_examples_learn_every_token_and_end_with_eos(tokenizer, tmp_path: Path) -> None:
    ds, _, _ = _encode(write_records(tmp_path / "t.jsonl", SHAPES["text"]), tokenizer)
    for ex in ds.examples:
        assert ex["labels"] == ex["input_ids"] and ex["input_ids"][-1] == tokenizer.eos_token_id


def test_instruction_labels_only_the_completion(tokenizer, tmp_path: Path) -> None:
    ds, fmt, _ = _encode(write_records(tmp_path / "i.jsonl", INSTRUCTIONS), tokenizer)
    assert fmt == "instruction"
    for rec, ex in zip(INSTRUCTIONS, ds.examples):
        prompt = tokenizer(rec["prompt"])["input_ids"]
        completion = tokenizer(rec["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert ex["input_ids"] == prompt + completion
        assert ex["labels"] == [IGNORE] * len(prompt) + completion
        learned = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
        assert tokenizer.decode(learned) == rec["completion"] + tokenizer.eos_token


def test_instruction_field_names_are_configurable(tokenizer, tmp_path: Path) -> None:
    recs = [{"question": r["prompt"], "answer": r["completion"]} for r in INSTRUCTIONS]
    path = write_records(tmp_path / "q.json", recs)
    ds, fmt, _ = _encode(path, tokenizer, prompt_field="question", completion_field="answer")
    assert fmt == "instruction" and len(ds) == len(recs)


def test_chat_labels_only_the_assistant_turns(tokenizer, tmp_path: Path) -> None:
    ds, fmt, _ = _encode(write_records(tmp_path / "c.parquet", CHATS), tokenizer)
    assert fmt == "chat"
    eos = tokenizer.eos_token
    for rec, ex in zip(CHATS, ds.examples):
        learned = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
        ignored = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE]
        assistant = [m["content"] for m in rec["messages"] if m["role"] == "assistant"]
        assert tokenizer.decode(learned) == "".join(f"{a}{eos}\n" for a in assistant)
        text = tokenizer.decode(ignored)
        assert "you answer briefly" in text and "<|user|>where does boat" in text and "<|assistant|>" in text
        assert not any(a in text for a in assistant)
        # the whole row is the template's rendering
        assert tokenizer.decode(ex["input_ids"]) == tokenizer.apply_chat_template(rec["messages"], tokenize=False)


def test_chat_segments_alternate(tokenizer) -> None:
    pieces = chat_segments(CHATS[0]["messages"], tokenizer)
    assert [trained for _, trained in pieces] == [False, True, False, True]
    assert pieces[1][0].startswith("north at dawn")


def test_truncation_that_leaves_no_completion_drops_the_example(tokenizer, tmp_path: Path) -> None:
    recs = [{"prompt": "word " * 80, "completion": " x"}, INSTRUCTIONS[0]]
    spec = DataSpec()
    ds, _, dropped = encode_records(read_records(write_records(tmp_path / "l.jsonl", recs)), spec, tokenizer, 32)
    assert dropped == 1 and len(ds) == 1
    with pytest.raises(ValueError, match="max_seq_len=32"):
        encode_records(read_records(write_records(tmp_path / "l2.jsonl", recs[:1])), spec, tokenizer, 32)


def test_shape_errors_are_clear(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot tell the data format \(fields present: body, id\).*train.data.format"):
        detect_format({"body": "x", "id": 1}, DataSpec(), "f.jsonl, line 1")
    bad = write_records(tmp_path / "b.jsonl", [INSTRUCTIONS[0], {"prompt": "p"}])
    with pytest.raises(ValueError, match=r"b\.jsonl, line 2: record has no field 'completion' \(train.data.completion_field\)"):
        _encode(bad, tokenizer)
    no_assistant = write_records(tmp_path / "n.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match=r"n\.jsonl, line 1: .*no 'assistant' message"):
        _encode(no_assistant, tokenizer)
    broken = write_records(tmp_path / "m.jsonl", [{"messages": [{"role": "user"}]}])
    with pytest.raises(ValueError, match=r"messages\[0\] must be an object with string 'role' and 'content'"):
        _encode(broken, tokenizer)
    csv_row = tmp_path / "r.csv"
    csv_row.write_text("text\nfine\n\"a\",\"extra\"\n")
    with pytest.raises(ValueError, match=r"r\.csv, line 3: more values"):
        read_records(csv_row)


def test_packing_keeps_every_token_masks_first_tokens_and_cuts_padding(tokenizer, tmp_path: Path) -> None:
    chats, _, _ = _encode(write_records(tmp_path / "c.jsonl", CHATS), tokenizer)
    instructions, _, _ = _encode(write_records(tmp_path / "i.jsonl", INSTRUCTIONS), tokenizer)
    ds = type(chats)([x for pair in zip(chats.examples, instructions.examples) for x in pair])  # mixed lengths
    packed = pack(ds.examples, 128)
    assert sum(len(r["input_ids"]) for r in packed.examples) == sum(len(e["input_ids"]) for e in ds.examples)
    assert all(len(r["input_ids"]) <= 128 and sum(r["seq_lens"]) == len(r["input_ids"]) for r in packed.examples)
    assert len(packed) < len(ds)
    for row in packed.examples:
        start = 0
        for ln in row["seq_lens"]:
            assert row["labels"][start] == IGNORE
            start += ln
    before, _ = pad_count(ds.examples, 8)
    after, _ = pad_count(packed.examples, 8)
    print(f"pad tokens per epoch: unpacked {before}, packed {after}")
    assert after < before / 2
