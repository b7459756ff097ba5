"""Training text in, token batches out.

`read_texts(path, text_field)` reads a file or a directory of data files (sorted, recursive): JSONL / NDJSON
(one record a line), JSON (a list of records) and .txt (one example per non-empty line). A record without
`text_field` raises a ValueError naming the file, the line and the field. `TokenizedDataset` tokenises with
truncation; `CausalLMCollator` pads each batch to its longest example and sets labels to -100 on padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt")


def data_files(path: Path) -> list[Path]:
    """The data files of an input: the file itself, or every data file under a directory in sorted order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"data input {path} does not exist")
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ValueError(f"data input {path} holds no data files ({', '.join(DATA_SUFFIXES)})")
    return files


def _kind(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix == ".txt":
        return "txt"
    head = text.lstrip()[:1]  # an explicitly named file with another suffix: sniff it
    return "json" if head == "[" else "jsonl" if head == "{" else "txt"


def _field(record: Any, field: str, path: Path, line: int) -> str:
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {line}: expected a JSON object with a {field!r} field, got {type(record).__name__}")
    if field not in record:
        present = ", ".join(sorted(map(str, record))) or "none"
        raise ValueError(
            f"{path}, line {line}: record has no field {field!r} (train.data.text_field); fields present: {present}"
        )
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"{path}, line {line}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _json_array(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for each element of a top-level JSON array, keeping line numbers."""
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "[":
        raise ValueError(f"{path}: a .json data file must hold a list of records ([{{...}}, ...])")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        line = text.count("\n", 0, i) + 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        yield line, obj
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "]":
            return
        else:
            raise ValueError(f"{path}, line {text.count(chr(10), 0, i) + 1}: invalid JSON: expected ',' or ']'")


def read_file(path: Path, text_field: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    kind = _kind(path, text)
    if kind == "txt":
        return [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if kind == "json":
        return [_field(rec, text_field, path, line) for line, rec in _json_array(text, path)]
    out = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {line}: invalid JSON: {exc.msg}") from None
        out.append(_field(record, text_field, path, line))
    return out


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """All non-empty examples of an input, in file order."""
    texts: list[str] = []
    for file in data_files(Path(path)):
        texts.extend(t for t in read_file(file, text_field) if t.strip())
    if not texts:
        raise ValueError(f"data input {path} holds no non-empty examples")
    return texts


class TokenizedDataset:
    """A map-style dataset of {"input_ids": [...]} examples (a torch Dataset by protocol)."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, max_seq_len: int) -> None:
        ids = tokenizer(list(texts), truncation=True, max_length=max_seq_len, add_special_tokens=True)["input_ids"]
        self.examples = [list(x) for x in ids if len(x) > 0]
        if not self.examples:
            raise ValueError("no example produced a token after tokenisation")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.examples[i]}

    @property
    def num_tokens(self) -> int:
        return sum(len(x) for x in self.examples)


class CausalLMCollator:
    """Dynamic padding to the batch's longest example; labels = input_ids, -100 where padded."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for row, f in enumerate(features):
            ids = f["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def tokenize(texts: Sequence[str], tokenizer: Any, max_seq_len: int) -> TokenizedDataset:
    """Tokenise `texts` (truncated to `max_seq_len`) into a dataset of {"input_ids": [...]}."""
    return TokenizedDataset(texts, tokenizer, max_seq_len)
