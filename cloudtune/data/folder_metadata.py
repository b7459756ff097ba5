"""The metadata file of a 🤗 Datasets folder input (`imagefolder`, `audiofolder`): `metadata.jsonl` (one JSON object
per line) or `metadata.csv` (a header row, then one row per file), each row naming its file in `file_name`
beside its other columns (the caption or description). Standard library only; read by the preflight and the
recipes alike. Source: the Datasets docs, "Create an image dataset" / "Create an audio dataset" (metadata).

A row (or an example file) with several problems is one line naming them all (`one_line`), the most fundamental
first: a missing file and an empty caption are both named, so that fixing one does not reveal the other a run later."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cloudtune.errors import JobInputError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def metadata_file(root: Path, shown: str) -> Path | None:
    """The folder's metadata file (metadata.jsonl or metadata.csv), None when it has none. Both at once is a
    JobInputError, as 🤗 Datasets' folder builders refuse it: which one holds the captions would be a guess."""
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise JobInputError(f"{shown}: both metadata.jsonl and metadata.csv; which holds the captions would be a "
                            f"guess. To fix: keep one of them")
    return found[0] if found else None


def metadata_rows(meta: Path, shown: str, example: str) -> list[tuple[str, dict]]:
    """[(where, row)] of the metadata file `meta`, where = "<shown>, line N" (N counts the CSV header as line 1).
    `example` is one JSON row shown in the fix (e.g. '{"file_name": "a.wav", "text": "calm piano"}'). A UTF-8 byte
    order mark (spreadsheet exports) is skipped. JobInputError, naming the file and line, when the file is not UTF-8
    text or a JSONL line is not a JSON object."""
    try:
        text = meta.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobInputError(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start}). To fix: save it as UTF-8"
                            ) from None
    except OSError as exc:
        raise JobInputError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if meta.suffix == ".csv":
        return _csv_rows(text, shown)
    rows: list[tuple[str, dict]] = []
    for n, line in enumerate(text.split("\n"), 1):  # JSON Lines end at \n only: U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JobInputError(f"{shown}, line {n}: not a JSON object ({exc.msg}). To fix: write one object per "
                                f"line, e.g. {example}") from None
        if not isinstance(row, dict):
            raise JobInputError(f"{shown}, line {n}: a JSON object is needed, found {type(row).__name__}. To fix: "
                                f"write one object per line, e.g. {example}")
        rows.append((f"{shown}, line {n}", row))
    return rows


def _csv_rows(text: str, shown: str) -> list[tuple[str, dict]]:
    """[(where, row)] of CSV text, as csv.DictReader makes them (a short row's missing columns are None, a long row's
    extra values are under None); a row's line is the file line it starts on (a quoted caption may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None) or []
    rows: list[tuple[str, dict]] = []
    while True:
        start = reader.line_num + 1
        values = next(reader, None)
        if values is None:
            return rows
        if values:  # a blank line is no row
            row: dict = {name: values[i] if i < len(values) else None for i, name in enumerate(header)}
            if len(values) > len(header):
                row[None] = values[len(header):]
            rows.append((f"{shown}, line {start}", row))


class Problem(NamedTuple):
    """One thing wrong with a row (or an example file): `where` names it (the file and line, or the path), `what`
    says what is wrong, `fix` what to do (without "To fix:")."""

    where: str
    what: str
    fix: str


def one_line(problems: Sequence[Problem]) -> str:
    """The problems of one row (or one example) as the one line that names them all, most fundamental first as
    given: `WHERE: WHAT; and WHAT. To fix: FIX; and FIX` (a later problem named elsewhere, such as the image a
    metadata line names, keeps its own `where`). One problem reads `WHERE: WHAT. To fix: FIX`."""
    if not problems:
        raise ValueError("one_line needs at least one problem")
    lead = problems[0].where
    whats = [p.what if p.where == lead else f"{p.where}: {p.what}" for p in problems]
    fixes = list(dict.fromkeys(p.fix for p in problems))
    return f"{lead}: {'; and '.join(whats)}. To fix: {'; and '.join(fixes)}"


def outside_problem(name: str, where: str, shown: str) -> Problem | None:
    """The problem of a row's `file_name` that is not a relative path staying inside the folder `shown` (an
    absolute path, or `..` out of it): only the folder is uploaded, so that file would be missing in the job."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if posixpath.isabs(normal) or Path(name).is_absolute() or normal == ".." or normal.startswith("../"):
        return Problem(where, f"file_name {name!r} is not inside {shown}: only that folder goes to the job",
                       f"move the file into {shown} and give its path relative to it")
    return None


def file_under(root: Path, name: str, where: str, shown: str) -> Path:
    """`root / name` for a row's `file_name`, which must be a relative path that stays inside the folder (see
    `outside_problem`). JobInputError naming `where` (the file and line) and the fix otherwise."""
    problem = outside_problem(name, where, shown)
    if problem is not None:
        raise JobInputError(one_line([problem]))
    return root / posixpath.normpath(name.replace("\\", "/"))
