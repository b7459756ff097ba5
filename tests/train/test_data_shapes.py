"""Data shapes (text / instruction / chat) x file types (JSONL / JSON / CSV / Parquet / a directory), label masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.spec import DataSpec
from cloudtune.data.chat import chat_segments
from cloudtune.train.data import encode_input
from cloudtune.train.packing import IGNORE, pack, pad_count
from cloudtune.data.records import detect_format, read_records

from .conftest import CHATS, INSTRUCTIONS, SHAPES, write_records

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class _Examples(list):
    @property
    def examples(self) -> list:
        return list(self)


def _encode(path: Path, tokenizer, max_len: int = 128, **data):
    """(examples as {input_ids, labels} dicts, format, dropped) through the job's own loader (🤗 Datasets)."""
    enc = encode_input(path, None, DataSpec(**data), tokenizer, max_len)
    rows = enc.dataset.select_columns(["input_ids", "labels"]).to_list()
    return _Examples(rows), enc.fmt, enc.dropped


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
    ds, _, dropped = _encode(write_records(tmp_path / "l.jsonl", recs), tokenizer, 32)
    assert dropped == 1 and len(ds) == 1
    with pytest.raises(ValueError, match="max_seq_len=32"):
        _encode(write_records(tmp_path / "l2.jsonl", recs[:1]), tokenizer, 32)


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
    import datasets

    from cloudtune.train.packing import CausalLMCollator

    chats, _, _ = _encode(write_records(tmp_path / "c.jsonl", CHATS), tokenizer)
    instructions, _, _ = _encode(write_records(tmp_path / "i.jsonl", INSTRUCTIONS), tokenizer)
    examples = [x for pair in zip(chats, instructions) for x in pair]  # mixed lengths
    packed = pack(datasets.Dataset.from_list(examples), 128).to_list()
    assert sum(len(r["input_ids"]) for r in packed) == sum(len(e["input_ids"]) for e in examples)
    assert all(len(r["input_ids"]) <= 128 and sum(r["seq_lengths"]) == len(r["input_ids"]) for r in packed)
    assert len(packed) < len(examples)
    assert sorted(map(str, examples)) == sorted(  # every example whole, labels and all
        str({"input_ids": r["input_ids"][a:a + n], "labels": r["labels"][a:a + n]})
        for r in packed for a, n in zip([sum(r["seq_lengths"][:k]) for k in range(len(r["seq_lengths"]))], r["seq_lengths"]))
    batch = CausalLMCollator(tokenizer.pad_token_id, "flash_attention_2")(packed[:8])
    assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in packed[:8]))  # flattened: no padding
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == sum(len(r["seq_lengths"]) for r in packed[:8])
    assert all(int(batch["labels"][0, i]) == IGNORE for i in starts)
    before, _ = pad_count([len(e["input_ids"]) for e in examples], 8)
    print(f"pad tokens per epoch: unpacked {before}, packed 0")
    assert before > 0


def test_tokenising_a_large_part_prints_its_progress_every_tenth(capsys) -> None:
    from cloudtune.train.data import PROGRESS_FROM, Part, tokenising_progress

    part = Part("json", [(Path("big.jsonl"), "s3://b/big.jsonl")])
    total = PROGRESS_FROM * 2
    for start in range(0, total, 1000):  # the batches of one map, in any process
        tokenising_progress(start, min(start + 1000, total), total, part)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "tokenising" in ln]
    assert lines == [f"[cloudtune] tokenising s3://b/big.jsonl: {t * 10}% ({total * t // 10:,} of {total:,} records)"
                     for t in range(1, 10)]
    tokenising_progress(0, 1000, PROGRESS_FROM - 1, part)  # small parts are quiet
    assert capsys.readouterr().out == ""
