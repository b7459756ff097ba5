"""Data files in, records out, with where each record came from: what the preflight reads itself (the first
records of each file, `sample_file_records`) and what names the file, the line and the field in an error found
while the training data is loaded or encoded (`locate`).

Files: JSONL / NDJSON (one record a line), JSON (a list of records, or JSON Lines), CSV (a header row, one record a
row), Parquet and Arrow (one record a row), .txt (one example per non-empty line, as `{text_field: line}`); a
directory is read recursively in sorted order, hidden paths skipped. The training data itself is loaded by
🤗 Datasets (`cloudtune.train.data`); these readers check the same files the same way, so an error names
`file, line N` (`file, row N` for Parquet and Arrow).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator

from cloudtune.errors import JobInputError

JSON_FIX = "To fix: correct the JSON at that line (each record an object, e.g. {\"text\": \"...\"})"
NO_RECORDS_FIX = "To fix: put the records in it, or point the input at the file that holds them"
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq", ".arrow", ".txt")


# metadata 🤗 Datasets writes beside the data (save_to_disk: dataset_info.json, state.json, dataset_dict.json; Hub
# exports: dataset_infos.json): never records, wherever they are in an input directory
DATASETS_METADATA = frozenset({"dataset_info.json", "state.json", "dataset_dict.json", "dataset_infos.json"})


def saved_dataset(path: Path) -> str | None:
    """What `datasets.save_to_disk` wrote at `path`: "dataset" (a Dataset: dataset_info.json + state.json + Arrow
    shards), "dataset_dict" (a DatasetDict: dataset_dict.json + one such directory per split), else None. The
    runtime loads both with `datasets.load_from_disk` (cloudtune.train.data)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file():
        return "dataset_dict"
    if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
        return "dataset"
    return None


def _read_meta(file: Path, shown: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobInputError(f"{shown}: a saved 🤗 dataset whose {file.name} cannot be read ({exc}); save it again "
                            f"with save_to_disk") from None


def saved_dataset_files(path: Path, shown: str) -> list[Path]:
    """The Arrow shards of a saved dataset at `path` (see `saved_dataset`), in their order (state.json's
    `_data_files`); of a DatasetDict, its `train` split's, the split the recipe trains on (as the runtime's
    load). JobInputError naming `shown` for a DatasetDict without `train`, unreadable metadata or a missing shard."""
    path = Path(path)
    if saved_dataset(path) == "dataset_dict":
        splits = _read_meta(path / "dataset_dict.json", shown)
        splits = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(splits, list) or "train" not in splits:
            raise JobInputError(f"{shown}: a saved DatasetDict without a 'train' split (splits: "
                                f"{', '.join(map(str, splits or []))}); save the split to train on")
        return saved_dataset_files(path / "train", f"{shown.rstrip('/')}/train")
    state = _read_meta(path / "state.json", shown)
    names = [f.get("filename") for f in state.get("_data_files", [])] if isinstance(state, dict) else []
    files = [path / n for n in names if isinstance(n, str)]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        raise JobInputError(f"{shown}: a saved 🤗 dataset whose state.json names "
                            f"{'missing shards: ' + ', '.join(missing) if missing else 'no data files'}; copy the "
                            f"whole directory save_to_disk wrote")
    return files


def data_files(path: Path, shown: str | None = None) -> list[Path]:
    """The data files of an input: the file itself, the Arrow shards of a `save_to_disk` directory (see
    `saved_dataset_files`), or every data file under a directory in sorted order (🤗 Datasets' metadata files and
    hidden paths left out). `shown` names the input in errors (the user's path or URI)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise JobInputError(f"data input {shown or path} does not exist")
    if saved_dataset(path):
        return saved_dataset_files(path, shown or str(path))
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and p.name not in DATASETS_METADATA
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
            return f"{shown}: {name} text, not UTF-8. To fix: save it as UTF-8 (e.g. Excel: CSV UTF-8; Notepad: Save as > UTF-8)"
    if raw.startswith(b"\x1f\x8b"):
        return f"{shown}: a gzip-compressed file. To fix: decompress it (gunzip) or give the uncompressed file"
    if raw.startswith(b"PAR1"):
        return f"{shown}: a Parquet file under a text suffix. To fix: rename it to .parquet"
    nul = raw.find(b"\x00", 0, 1 << 16)
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        return (f"{shown}: not text (a NUL byte at offset {nul}, line {line}: UTF-16 without a byte-order mark, or a "
                f"binary file). To fix: save it as UTF-8 text")
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
            f"{shown}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}, line {line}{guess}). "
            f"To fix: save it as UTF-8 (e.g. Excel: CSV UTF-8; Notepad: Save as > UTF-8)"
        ) from None


def json_limit(exc: BaseException) -> str:
    """The reason Python's json module refused valid-looking JSON past its limits, and what to change."""
    if isinstance(exc, RecursionError):
        return "the record nests its brackets too deeply to read; flatten it (a record nests a few levels)"
    import sys

    return (f"a number has more than {sys.get_int_max_str_digits():,} digits (Python's limit on converting text to "
            "an integer); write it as a string, or drop the field")


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
            raise JobInputError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}. {JSON_FIX}") from None
        except (RecursionError, ValueError) as exc:  # brackets nested past the parser's depth; a 4,300-digit number
            raise JobInputError(f"{path}, line {line}: {json_limit(exc)}") from None
        yield line, obj
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "]":
            return
        elif truncated and i >= n:
            return
        else:
            raise JobInputError(f"{path}, line {text.count(chr(10), 0, i) + 1}: invalid JSON: expected ',' or ']'. {JSON_FIX}")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq", ".arrow")


def _arrow_rows(path: Path, max_rows: int | None) -> list[dict[str, Any]]:
    """Rows of an Arrow IPC file (file or stream format, as datasets writes it)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            reader: Any = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = iter(pa.ipc.open_stream(source))
        rows: list[dict[str, Any]] = []
        for batch in batches:
            rows.extend(batch.to_pylist())
            if max_rows is not None and len(rows) >= max_rows:
                return rows[:max_rows]
    return rows


def _parquet_records(path: Path, shown: str, max_rows: int | None = None) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the training image
        raise JobInputError(f"{shown}: reading Parquet needs pyarrow; pip install pyarrow") from None
    try:
        if path.suffix.lower() == ".arrow":
            rows = _arrow_rows(path, max_rows)
        elif max_rows is None:
            rows = pq.read_table(str(path)).to_pylist()
        else:
            batch = next(pq.ParquetFile(str(path)).iter_batches(batch_size=max_rows), None)
            rows = batch.to_pylist() if batch is not None else []
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise JobInputError(f"{shown}: not a readable {'Arrow' if path.suffix.lower() == '.arrow' else 'Parquet'} file: {exc}") from None
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
                raise JobInputError(f"{shown}, line {line}: invalid JSON: {exc.msg}{hint}. {JSON_FIX}") from None
            except (RecursionError, ValueError) as exc:  # see json_limit
                raise JobInputError(f"{shown}, line {line}: {json_limit(exc)}") from None
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
                                    f"data file is comma-separated. To fix: save it with commas (or as .jsonl)")
        for row in reader:
            if None in row:
                raise JobInputError(f"{shown}, line {reader.line_num}: more values than the header has columns. To fix: quote "
                                    f"a value that holds a comma, or name the extra column in the header")
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
        raise JobInputError(f"data input {shown or path} holds no records. {NO_RECORDS_FIX}")
    return records


def where_field(record: Any, field: str, where: str, option: str, *, kind: type | tuple = str) -> Any:
    """`record[field]`, checked to be a `kind`; else a JobInputError naming `where`, the field and the option that
    names it. A null value counts as missing (🤗 Datasets gives a record that lacks a column `None` there)."""
    if not isinstance(record, dict):
        raise JobInputError(f"{where}: expected a record (a JSON object / a row) with a {field!r} field, got "
                            f"{type(record).__name__}. To fix: write each record as an object, e.g. {{{field!r}: ...}}")
    if record.get(field) is None:
        present = ", ".join(sorted(str(k) for k, v in record.items() if v is not None)) or "none"
        raise JobInputError(f"{where}: record has no field {field!r} ({option}); fields present: {present}. To fix: add it, "
                            f"or name the field that holds it in {option}")
    value = record[field]
    if not isinstance(value, kind):
        raise JobInputError(f"{where}: field {field!r} must be a {getattr(kind, '__name__', 'value')}, got "
                            f"{type(value).__name__}. To fix: write it as one (e.g. a number in quotes for a str)")
    return value


def detect_format(record: Any, data: Any, where: str = "the first record") -> str:
    """The format of `data` (a DataSpec): its `format`, or for `auto` the shape of `record` (TRL's dataset types:
    `messages` = conversational language modeling -> chat; `prompt` + `completion` (plain or conversational) ->
    instruction; `text` -> text). Null fields count as absent."""
    if data.format != "auto":
        return data.format
    if isinstance(record, dict):
        has = {k for k, v in record.items() if v is not None}
        if data.messages_field in has:
            return "chat"
        if data.prompt_field in has and data.completion_field in has:
            return "instruction"
        if data.text_field in has:
            return "text"
        present = ", ".join(sorted(map(str, has))) or "none"
    else:
        present = type(record).__name__
    raise JobInputError(
        f"{where}: cannot tell the data format (fields present: {present}). Expected one of: a {data.text_field!r} "
        f"field (text), {data.prompt_field!r} + {data.completion_field!r} fields (instruction), or a "
        f"{data.messages_field!r} list (chat). Rename the fields with train.data.text_field / prompt_field / "
        f"completion_field / messages_field, or set train.data.format"
    )


def locate(files: list[tuple[Path, str]], index: int, text_field: str = "text") -> str:
    """Where the `index`-th record (0-based, over `files` in order: (path, shown name)) came from: `file, line N`.
    Reads the files again with this module's parsers; called only to name a record in an error."""
    seen = 0
    for path, shown in files:
        records = read_file_records(path, text_field, shown)
        if index < seen + len(records):
            return records[index - seen][0]
        seen += len(records)
    return f"record {index + 1}"
