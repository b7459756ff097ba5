"""Training text in, token batches out.

`read_records(path, text_field)` reads a file or a directory of data files (sorted, recursive): JSONL / NDJSON
(one record a line), JSON (a list of records), CSV (a header row, one record a row), Parquet (one record a row)
and .txt (one example per non-empty line, as `{text_field: line}`); each record comes with where it came from
(`file, line N` / `file, row N`) for error messages. `read_texts(path, text_field)` is the text-only view: a
record without `text_field` raises a ValueError naming the file, the line and the field.

The causal-LM shapes (`detect_format`, `encode_*`): plain text (loss on every token), instruction (prompt +
completion; loss on the completion only) and chat (messages rendered with the tokenizer's chat template; loss on
the assistant turns only). Each example is `{"input_ids", "labels"}` with -100 where there is no loss.
`pack` puts several examples in one row (best-fit decreasing); `CausalLMCollator` pads a batch and, for packed
rows, builds position ids that restart at 0 per example and a 4D block-diagonal causal attention mask, so no
token attends across examples.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from cloudtune.errors import JobInputError

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq", ".txt")


def data_files(path: Path, shown: str | None = None) -> list[Path]:
    """The data files of an input: the file itself, or every data file under a directory in sorted order.
    `shown` names the input in errors (the user's path or URI)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise JobInputError(f"data input {shown or path} does not exist")
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise JobInputError(f"data input {shown or path} holds no data files ({', '.join(DATA_SUFFIXES)})")
    return files


def _kind(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":  # a list of records, or JSON Lines under .json (what datasets' to_json writes)
        return "jsonl" if text.lstrip("\ufeff \t\r\n")[:1] == "{" else "json"
    if suffix == ".txt":
        return "txt"
    if suffix == ".csv":
        return "csv"
    head = text.lstrip()[:1]  # an explicitly named file with another suffix: sniff it
    return "json" if head == "[" else "jsonl" if head == "{" else "txt"


def shown_name(file: Path, root: Path, shown: str | None) -> str:
    """How an error names `file`, read from the input at `root`: under `shown`, the user's own name for that input
    (the path or URI in the spec), when it is known; else the path as read.

    A file input arrives as a directory holding that one file (SageMaker channels, local copies), so a file whose
    name is the last part of `shown` is `shown` itself; any other file is `shown/<path inside the input>`.
    """
    if shown is None:
        return str(file)
    file, root = Path(file), Path(root)
    if file == root:
        return shown
    rel = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
    base = shown.rstrip("/")
    return shown if rel == base.rsplit("/", 1)[-1] else f"{base}/{rel}"


_BOMS = {codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16", codecs.BOM_UTF32_LE: "UTF-32",
         codecs.BOM_UTF32_BE: "UTF-32"}


def _not_utf8(raw: bytes, shown: str) -> str | None:
    """Why `raw` is plainly not UTF-8 text as a whole (a UTF-16/32 byte-order mark, gzip, NUL bytes), or None."""
    for bom, name in sorted(_BOMS.items(), key=lambda kv: -len(kv[0])):
        if raw.startswith(bom):
            return f"{shown}: {name} text, not UTF-8; save it as UTF-8 (e.g. Excel: CSV UTF-8; Notepad: Save as > UTF-8)"
    if raw.startswith(b"\x1f\x8b"):
        return f"{shown}: a gzip-compressed file; decompress it (gunzip) or give the uncompressed file"
    if raw.startswith(b"PAR1"):
        return f"{shown}: a Parquet file under a text suffix; rename it to .parquet"
    nul = raw.find(b"\x00", 0, 1 << 16)
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        return (f"{shown}: not text (a NUL byte at offset {nul}, line {line}: UTF-16 without a byte-order mark, or a "
                f"binary file); save it as UTF-8 text")
    return None


def decode_text(raw: bytes, shown: str, truncated: bool = False) -> str:
    """`raw` as UTF-8 text (a UTF-8 byte-order mark is dropped). Anything else is a JobInputError naming the file,
    the byte, its offset and line, and the fix. `truncated`: `raw` is the start of a longer file, so a character cut
    at its end is not an error."""
    problem = _not_utf8(raw, shown)
    if problem:
        raise JobInputError(problem)
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        if truncated and exc.reason == "unexpected end of data" and offset >= len(raw) - 3:
            return raw[skip:offset].decode("utf-8")
        line = raw.count(b"\n", 0, offset) + 1
        guess = ""
        try:
            raw.decode("cp1252")
            guess = "; it looks like Windows-1252 (cp1252) text"
        except UnicodeDecodeError:
            pass
        raise JobInputError(
            f"{shown}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}, line {line}{guess}); "
            f"save it as UTF-8 (e.g. Excel: CSV UTF-8; Notepad: Save as > UTF-8)"
        ) from None


def _field(record: Any, field: str, path: str, line: int) -> str:
    if not isinstance(record, dict):
        raise JobInputError(f"{path}, line {line}: expected a JSON object with a {field!r} field, got {type(record).__name__}")
    if field not in record:
        present = ", ".join(sorted(map(str, record))) or "none"
        raise JobInputError(
            f"{path}, line {line}: record has no field {field!r} (train.data.text_field); fields present: {present}"
        )
    value = record[field]
    if not isinstance(value, str):
        raise JobInputError(f"{path}, line {line}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _json_array(text: str, path: str, truncated: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for each element of a top-level JSON array, keeping line numbers.

    `truncated`: `text` is the start of the file; stop quietly at the first element it cuts."""
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "[":
        raise JobInputError(f"{path}: a .json data file must hold a list of records ([{{...}}, ...])")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        line = text.count("\n", 0, i) + 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            if truncated:
                return
            raise JobInputError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        yield line, obj
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "]":
            return
        elif truncated and i >= n:
            return
        else:
            raise JobInputError(f"{path}, line {text.count(chr(10), 0, i) + 1}: invalid JSON: expected ',' or ']'")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _parquet_records(path: Path, shown: str, max_rows: int | None = None) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the training image
        raise JobInputError(f"{shown}: reading Parquet needs pyarrow; pip install pyarrow") from None
    try:
        if max_rows is None:
            rows = pq.read_table(str(path)).to_pylist()
        else:
            batch = next(pq.ParquetFile(str(path)).iter_batches(batch_size=max_rows), None)
            rows = batch.to_pylist() if batch is not None else []
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise JobInputError(f"{shown}: not a readable Parquet file: {exc}") from None
    return [(f"{shown}, row {i}", row) for i, row in enumerate(rows, start=1)]


def parse_records(text: str, path: Path, shown: str, text_field: str = "text",
                  truncated: bool = False) -> Iterator[tuple[str, Any]]:
    """(where, record) for each record of the decoded text of data file `path`, named `shown` in errors.
    `truncated`: `text` is the start of the file: its last, possibly cut, line or element is left out."""
    kind = _kind(path, text)
    if truncated and kind != "json":
        text = text[: text.rfind("\n") + 1]
    if kind == "txt":
        yield from ((f"{shown}, line {i}", {text_field: ln.rstrip("\r")})
                    for i, ln in enumerate(text.split("\n"), start=1) if ln.strip())
    elif kind == "csv":
        yield from _csv_records(text, shown)
    elif kind == "json":
        yield from ((f"{shown}, line {line}", rec) for line, rec in _json_array(text, shown, truncated))
    else:
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                hint = ("; a .json data file holds a list of records ([{...}, ...]) or one record per line"
                        if path.suffix.lower() == ".json" else "")
                raise JobInputError(f"{shown}, line {line}: invalid JSON: {exc.msg}{hint}") from None
            yield f"{shown}, line {line}", record


def _csv_records(text: str, shown: str) -> Iterator[tuple[str, Any]]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:
            raise JobInputError(f"{shown}: a .csv data file needs a header row naming its columns")
        if len(reader.fieldnames) == 1:
            sep = next((c for c in (";", "\t", "|") if c in reader.fieldnames[0]), None)
            if sep is not None:
                raise JobInputError(f"{shown}, line 1: the header {reader.fieldnames[0]!r} is {sep!r}-separated; a .csv "
                                    f"data file is comma-separated: save it with commas (or as .jsonl)")
        for row in reader:
            if None in row:
                raise JobInputError(f"{shown}, line {reader.line_num}: more values than the header has columns")
            yield f"{shown}, line {reader.line_num}", dict(row)
    except csv.Error as exc:
        raise JobInputError(f"{shown}, line {reader.line_num}: not valid CSV: {exc}") from None


def read_file_records(path: Path, text_field: str = "text", shown: str | None = None) -> list[tuple[str, Any]]:
    """(where, record) for each record of one data file; `where` is `"<file>, line N"` or `"<file>, row N"`, the
    file named `shown` (the user's name for it) when given."""
    path = Path(path)
    shown = shown or str(path)
    if _is_parquet(path):
        return _parquet_records(path, shown)
    return list(parse_records(decode_text(path.read_bytes(), shown), path, shown, text_field))


def sample_file_records(path: Path, text_field: str, shown: str, max_bytes: int,
                        max_records: int) -> tuple[list[tuple[str, Any]], bool]:
    """The first records of one data file, read from at most `max_bytes` of it (the whole of that is checked to be
    UTF-8). Returns (records, complete): `complete` when the file was read to its end."""
    path = Path(path)
    if _is_parquet(path):
        records = _parquet_records(path, shown, max_records)
        return records, len(records) < max_records
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    truncated = len(raw) > max_bytes
    text = decode_text(raw[:max_bytes] if truncated else raw, shown, truncated)
    records: list[tuple[str, Any]] = []
    try:
        for item in parse_records(text, path, shown, text_field, truncated):
            if len(records) >= max_records:
                return records, False
            records.append(item)
    except JobInputError:
        if not (truncated and _kind(path, text) == "csv" and records):
            raise  # a quoted CSV cell cut by the byte limit is not an error in the file
    if truncated and _kind(path, text) == "csv":
        records = records[:-1]  # a quoted cell may hold a newline: the last row may be cut short
    return records, not truncated


def read_records(path: Path, text_field: str = "text", shown: str | None = None) -> list[tuple[str, Any]]:
    """Every record of an input (a file or a directory of data files), in file order, with where it came from.
    `shown`: the user's name for the input (see `shown_name`), used in every error and `where`."""
    path = Path(path)
    records: list[tuple[str, Any]] = []
    for file in data_files(path, shown):
        records.extend(read_file_records(file, text_field, shown_name(file, path, shown)))
    if not records:
        raise JobInputError(f"data input {shown or path} holds no records")
    return records


def _where_field(record: Any, field: str, where: str, option: str, *, kind: type | tuple = str) -> Any:
    if not isinstance(record, dict):
        raise JobInputError(f"{where}: expected a record (a JSON object / a row) with a {field!r} field, got {type(record).__name__}")
    if field not in record:
        present = ", ".join(sorted(map(str, record))) or "none"
        raise JobInputError(f"{where}: record has no field {field!r} ({option}); fields present: {present}")
    value = record[field]
    if not isinstance(value, kind):
        raise JobInputError(f"{where}: field {field!r} must be a {getattr(kind, '__name__', 'value')}, got {type(value).__name__}")
    return value


def read_file(path: Path, text_field: str) -> list[str]:
    path = Path(path)
    out = []
    for where, record in read_file_records(path, text_field):
        line = where.rsplit(" ", 1)[-1]
        out.append(_field(record, text_field, str(path), int(line)))
    return out


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """All non-empty examples of an input, in file order."""
    texts: list[str] = []
    for file in data_files(Path(path)):
        texts.extend(t for t in read_file(file, text_field) if t.strip())
    if not texts:
        raise JobInputError(f"data input {path} holds no non-empty examples")
    return texts


# ----------------------------------------------------------------------------------------------
# Causal-LM shapes: text, instruction, chat
# ----------------------------------------------------------------------------------------------

IGNORE = -100


def detect_format(record: Any, data: Any, where: str = "the first record") -> str:
    """The format of `data` (a DataSpec): its `format`, or for `auto` the shape of `record`."""
    if data.format != "auto":
        return data.format
    if isinstance(record, dict):
        if data.messages_field in record:
            return "chat"
        if data.prompt_field in record and data.completion_field in record:
            return "instruction"
        if data.text_field in record:
            return "text"
        present = ", ".join(sorted(map(str, record))) or "none"
    else:
        present = type(record).__name__
    raise JobInputError(
        f"{where}: cannot tell the data format (fields present: {present}). Expected one of: a {data.text_field!r} "
        f"field (text), {data.prompt_field!r} + {data.completion_field!r} fields (instruction), or a "
        f"{data.messages_field!r} list (chat). Rename the fields with train.data.text_field / prompt_field / "
        f"completion_field / messages_field, or set train.data.format"
    )


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_text(text: str, tokenizer: Any, max_seq_len: int) -> dict[str, list[int]] | None:
    """Every token has a label; the example ends with EOS when the tokenizer has one."""
    eos = tokenizer.eos_token_id
    limit = max_seq_len - 1 if eos is not None else max_seq_len
    ids = list(tokenizer(text, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"])
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    ids = ids[:max_seq_len]
    return {"input_ids": ids, "labels": list(ids)} if ids else None


def _from_segments(segments: list[tuple[list[int], bool]], max_seq_len: int) -> dict[str, list[int]] | None:
    ids: list[int] = []
    labels: list[int] = []
    for seg, trained in segments:
        ids.extend(seg)
        labels.extend(seg if trained else [IGNORE] * len(seg))
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    if not any(x != IGNORE for x in labels):
        return None  # nothing left to learn from (the completion was cut off, or is empty)
    return {"input_ids": ids, "labels": labels}


def encode_instruction(prompt: str, completion: str, tokenizer: Any, max_seq_len: int) -> dict[str, list[int]] | None:
    """prompt (no labels) + completion + EOS (labels). The two parts are tokenised apart: the boundary is exact."""
    eos = tokenizer.eos_token_id
    completion_ids = _ids(tokenizer, completion, False) + ([eos] if eos is not None else [])
    return _from_segments([(_ids(tokenizer, prompt, True), False), (completion_ids, True)], max_seq_len)


def check_messages(messages: Any, where: str, field: str) -> list[dict[str, str]]:
    if isinstance(messages, str):  # CSV cells and some exports hold the list as JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise JobInputError(f"{where}: field {field!r} must be a list of {{role, content}} messages, got a string that is not JSON") from None
    if hasattr(messages, "tolist"):
        messages = messages.tolist()
    if not isinstance(messages, list) or not messages:
        raise JobInputError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise JobInputError(f"{where}: {field}[{i}] must be an object with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise JobInputError(f"{where}: the conversation has no 'assistant' message, so nothing to learn from (loss is on assistant turns only)")
    return out


TEMPLATE_OPTION = "train.data.chat_template"


def _template_fix(message: str) -> str:
    text = message.lower()
    if "system" in text:
        return ("merge the system message into the first user turn, or use a template that supports a system role "
                f"({TEMPLATE_OPTION})")
    if "alternate" in text or "role" in text:
        return ("make the turns alternate as the template expects (user, assistant, user, ...), or use another "
                f"template ({TEMPLATE_OPTION})")
    return f"fix the conversation, or give a template that renders it ({TEMPLATE_OPTION})"


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool, where: str = "a record",
            option: str = "the tokenizer's chat template") -> str:
    """The conversation rendered by the chat template. A template that refuses it (raise_exception) or does not
    compile is a JobInputError naming `where`, the template (`option`) and a fix."""
    if not messages:
        return ""
    from jinja2.exceptions import TemplateError, TemplateSyntaxError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateSyntaxError as exc:
        raise JobInputError(f"{option}: not a valid Jinja template: {exc.message} (template line {exc.lineno}); "
                            f"fix it or set {TEMPLATE_OPTION}") from None
    except TemplateError as exc:
        message = str(exc.message if getattr(exc, "message", None) else exc)
        raise JobInputError(f"{where}: the chat template ({option}) refused this conversation: {message}; "
                            f"{_template_fix(message)}") from None
    if not isinstance(text, str):  # pragma: no cover - a batched answer
        text = text[0]
    return text


def chat_segments(messages: list[dict[str, str]], tokenizer: Any, where: str = "a record",
                  option: str = "the tokenizer's chat template") -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_assistant_turn) pieces.

    An assistant turn is what the template adds after the generation prompt: the text between the rendering of
    the history with `add_generation_prompt=True` and the rendering that includes that assistant message (its
    content and the template's end-of-turn marker). Requires each rendering to be a prefix of the full one.
    `option` names the template in errors (`train.data.chat_template`, or the tokenizer's own).
    """
    full = _render(tokenizer, messages, False, where, option)
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True, where, option)
        start = len(prompt) if i else 0
        end_text = _render(tokenizer, messages[: i + 1], False, where, option)
        if not (full.startswith(end_text) and full.startswith(prompt) and pos <= start <= len(end_text)):
            raise JobInputError(
                f"{where}: the chat template ({option}) does not render conversations prefix by prefix, so assistant "
                f"turns cannot be located for loss masking; use a template that does (set {TEMPLATE_OPTION})"
            )
        pieces.append((full[pos:start], False))
        pieces.append((full[start:len(end_text)], True))
        pos = len(end_text)
    pieces.append((full[pos:], False))
    return [(t, a) for t, a in pieces if t]


def template_option(data: Any) -> str:
    """How errors name the chat template in use: the spec's option when it gives one, else the tokenizer's own."""
    return TEMPLATE_OPTION if getattr(data, "chat_template", None) else "the model's own chat template"


def encode_chat(messages: list[dict[str, str]], tokenizer: Any, max_seq_len: int, where: str = "a record",
                option: str = "the tokenizer's chat template") -> dict[str, list[int]] | None:
    """The rendered conversation; labels on the assistant turns only. The template supplies BOS/EOS markers."""
    segments = [(_ids(tokenizer, text, False), trained)
                for text, trained in chat_segments(messages, tokenizer, where, option)]
    return _from_segments(segments, max_seq_len)


class LMDataset:
    """A map-style dataset of `{"input_ids", "labels"}` (packed rows add `"seq_lens"`)."""

    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    @property
    def num_tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.examples)


def encode_records(records: list[tuple[str, Any]], data: Any, tokenizer: Any, max_seq_len: int,
                   fmt: str | None = None) -> tuple[LMDataset, str, int]:
    """Encode every record in format `fmt` (detected from the first record when None).

    Returns (dataset, format, number of examples dropped because nothing with a label survived truncation).
    """
    if not records:
        raise JobInputError("no records to train on")
    fmt = fmt or detect_format(records[0][1], data, records[0][0])
    out: list[dict[str, list[int]]] = []
    dropped = 0
    for where, rec in records:
        if fmt == "text":
            text = _where_field(rec, data.text_field, where, "train.data.text_field")
            if not text.strip():
                continue
            ex = encode_text(text, tokenizer, max_seq_len)
        elif fmt == "instruction":
            prompt = _where_field(rec, data.prompt_field, where, "train.data.prompt_field")
            completion = _where_field(rec, data.completion_field, where, "train.data.completion_field")
            ex = encode_instruction(prompt, completion, tokenizer, max_seq_len)
        elif fmt == "chat":
            raw = _where_field(rec, data.messages_field, where, "train.data.messages_field", kind=object)
            ex = encode_chat(check_messages(raw, where, data.messages_field), tokenizer, max_seq_len, where,
                             template_option(data))
        else:  # pragma: no cover - the spec allows no other value
            raise JobInputError(f"unknown data format {fmt!r}")
        if ex is None:
            dropped += 1
        else:
            out.append(ex)
    if not out:
        raise JobInputError(
            f"no example has a token to learn from after tokenisation and truncation to max_seq_len={max_seq_len} "
            f"({dropped} dropped); raise train.hyperparameters.max_seq_len or shorten the prompts"
        )
    return LMDataset(out), fmt, dropped


# ----------------------------------------------------------------------------------------------
# Packing
# ----------------------------------------------------------------------------------------------


def pack(examples: list[dict[str, list[int]]], max_seq_len: int) -> LMDataset:
    """Best-fit-decreasing packing of examples into rows of at most `max_seq_len` tokens.

    Each row keeps its examples' boundaries (`seq_lens`). The first token of every example gets label -100: it
    would otherwise be predicted from the previous example's last token (alone, it is never predicted either).
    Deterministic: ties keep the data order.
    """
    import bisect

    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, row index), sorted
    for i in order:
        n = len(examples[i]["input_ids"])
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, row = free.pop(k)
            rows[row].append(i)
            if space - n > 0:
                bisect.insort(free, (space - n, row))
        else:
            rows.append([i])
            if max_seq_len - n > 0:
                bisect.insort(free, (max_seq_len - n, len(rows) - 1))
    packed = []
    for members in rows:
        members.sort()  # data order inside a row
        ids: list[int] = []
        labels: list[int] = []
        lens: list[int] = []
        for i in members:
            ex = examples[i]
            ids.extend(ex["input_ids"])
            labels.extend([IGNORE] + list(ex["labels"][1:]))
            lens.append(len(ex["input_ids"]))
        packed.append({"input_ids": ids, "labels": labels, "seq_lens": lens})
    return LMDataset(packed)


def pad_count(examples: list[dict[str, list[int]]], batch_size: int) -> tuple[int, int]:
    """(pad tokens, total tokens) when `examples` are batched in order and padded to each batch's longest row."""
    pads = total = 0
    for b in range(0, len(examples), batch_size):
        lens = [len(x["input_ids"]) for x in examples[b:b + batch_size]]
        total += max(lens) * len(lens)
        pads += max(lens) * len(lens) - sum(lens)
    return pads, total


class TokenizedDataset:
    """A map-style dataset of {"input_ids": [...]} examples (a torch Dataset by protocol)."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, max_seq_len: int) -> None:
        ids = tokenizer(list(texts), truncation=True, max_length=max_seq_len, add_special_tokens=True)["input_ids"]
        self.examples = [list(x) for x in ids if len(x) > 0]
        if not self.examples:
            raise JobInputError("no example produced a token after tokenisation")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.examples[i]}

    @property
    def num_tokens(self) -> int:
        return sum(len(x) for x in self.examples)


def block_causal_mask(seq_lens_per_row: list[list[int]], length: int, eager: bool) -> Any:
    """A (batch, 1, length, length) mask: token i sees token j iff j <= i and both are in the same example.

    Padding at the end of a row sees only itself. Boolean (True = attend) for SDPA and the other mask-taking
    implementations; additive float32 (0 / most negative) for eager attention, which adds the mask to the scores.
    """
    import torch

    n = len(seq_lens_per_row)
    segment = torch.full((n, length), -1, dtype=torch.long)
    for row, lens in enumerate(seq_lens_per_row):
        pos = 0
        for k, ln in enumerate(lens):
            segment[row, pos:pos + ln] = k
            pos += ln
        if pos < length:  # padding: one segment per pad token, so each sees only itself
            segment[row, pos:] = torch.arange(len(lens), len(lens) + length - pos)
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (same & causal)[:, None, :, :]
    if eager:
        return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)
    return mask


class CausalLMCollator:
    """Dynamic padding to the batch's longest row (or to `pad_to`, for fixed shapes); labels -100 on padding.

    Features are `{"input_ids"}` (labels = input_ids), `{"input_ids", "labels"}`, or packed rows that also carry
    `seq_lens`: then the batch gets `position_ids` restarting at 0 for every example and a 4D block-diagonal causal
    `attention_mask` (see `block_causal_mask`), plus `ct_num_tokens` (the real tokens, for throughput), which the
    recipe's Trainer removes before the forward pass.
    """

    def __init__(self, pad_token_id: int, attn_implementation: str | None = "sdpa", pad_to: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.eager = attn_implementation == "eager"
        self.pad_to = pad_to  # fixed shapes (PyTorch/XLA): every batch padded to this length

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max([len(f["input_ids"]) for f in features] + [self.pad_to or 0])
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for row, f in enumerate(features):
            ids = f["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[row, : len(ids)] = torch.tensor(f.get("labels", ids), dtype=torch.long)
            attention[row, : len(ids)] = 1
        if not any("seq_lens" in f for f in features):
            return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        seq_lens = [list(f.get("seq_lens") or [len(f["input_ids"])]) for f in features]
        position_ids = torch.zeros((n, longest), dtype=torch.long)
        for row, lens in enumerate(seq_lens):
            pos = 0
            for ln in lens:
                position_ids[row, pos:pos + ln] = torch.arange(ln)
                pos += ln
        return {
            "input_ids": input_ids,
            "attention_mask": block_causal_mask(seq_lens, longest, self.eager),
            "position_ids": position_ids,
            "labels": labels,
            "ct_num_tokens": attention.sum(),
        }


def tokenize(texts: Sequence[str], tokenizer: Any, max_seq_len: int) -> TokenizedDataset:
    """Tokenise `texts` (truncated to `max_seq_len`) into a dataset of {"input_ids": [...]}."""
    return TokenizedDataset(texts, tokenizer, max_seq_len)
