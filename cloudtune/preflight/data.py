"""Plan-time checks of local training data, without torch: the first records of every data file.

Each input is read up to a byte and record budget (`SAMPLE_BYTES`, `SAMPLE_RECORDS`); all of what is read is
checked to be UTF-8, to parse in its format, and to carry the fields the task needs. Label checks that need every
record (at least two labels; each eval label is a training label) run when the whole input fitted in the budget.
The parsers and checks are the recipes' own (cloudtune.data: records, chat, encode, labels), so a problem
found here reads exactly as it would inside the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune.data.chat import check_messages, check_tools, require_assistant
from cloudtune.data.labels import label_id, label_mapping
from cloudtune.data.records import NO_RECORDS_FIX, data_files, detect_format, sample_file_records, shown_name, where_field
from cloudtune.errors import JobInputError

SAMPLE_BYTES = 8 << 20
SAMPLE_RECORDS = 5000


def sample_input(path: Path, text_field: str, shown: str) -> tuple[list[tuple[str, Any]], bool]:
    """(records, complete) of the input at `path` (a file or a directory of data files), named `shown` in errors.

    Raises JobInputError for a missing input, no data files, bad encoding or unparseable records."""
    path = Path(path)
    records: list[tuple[str, Any]] = []
    budget, complete = SAMPLE_BYTES, True
    for file in data_files(path, shown):
        if budget <= 0 or len(records) >= SAMPLE_RECORDS:
            return records, False
        got, whole = sample_file_records(file, text_field, shown_name(file, path, shown), budget,
                                         SAMPLE_RECORDS - len(records))
        records.extend(got)
        complete = complete and whole
        budget -= file.stat().st_size
    if not records and complete:
        raise JobInputError(f"data input {shown} holds no records. {NO_RECORDS_FIX}")
    return records, complete


def check_lm_records(records: list[tuple[str, Any]], data: Any, fmt: str | None = None) -> str:
    """Check every record has the fields of the causal-LM format `fmt` (detected from the first record when None);
    returns the format. Raises JobInputError naming the record, the field and the option that names it."""
    if not records:
        return fmt or data.format
    fmt = fmt or detect_format(records[0][1], data, records[0][0])
    for where, rec in records:
        if fmt == "text":
            where_field(rec, data.text_field, where, "train.data.text_field")
        elif fmt == "instruction":
            values = []
            for name, option in ((data.prompt_field, "prompt_field"), (data.completion_field, "completion_field")):
                value = where_field(rec, name, where, f"train.data.{option}", kind=(str, list))
                if isinstance(value, list):  # conversational prompt-completion (TRL): message lists
                    check_messages(value, where, name)
                values.append(value)
            if isinstance(values[0], str) != isinstance(values[1], str):  # the recipe encodes both one way
                kind = "a string" if isinstance(values[0], str) else "a list of messages"
                raise JobInputError(f"{where}: field {data.completion_field!r} must be {kind} like the prompt "
                                    f"({data.prompt_field!r}): TRL's prompt-completion is standard (two strings) or "
                                    f"conversational (two message lists)")
        elif fmt == "chat":
            raw = where_field(rec, data.messages_field, where, "train.data.messages_field", kind=object)
            require_assistant(check_messages(raw, where, data.messages_field), where)
        if isinstance(rec, dict):
            check_tools(rec.get("tools"), where)
    return fmt


def classification_rows(records: list[tuple[str, Any]], data: Any) -> list[tuple[str, Any]]:
    """[(where, label)] of seq-classification records; each must have a non-empty string text and a label."""
    rows = []
    for where, rec in records:
        if not where_field(rec, data.text_field, where, "train.data.text_field").strip():
            raise JobInputError(f"{where}: field {data.text_field!r} is empty (train.data.text_field); a classifier "
                                f"needs text to classify: fill it or remove the record")
        rows.append((where, where_field(rec, data.label_field, where, "train.data.label_field", kind=(str, int, float))))
    return rows


def check_labels(train_rows: list[tuple[str, Any]], train_complete: bool, eval_rows: list[tuple[str, Any]] | None,
                 data: Any) -> None:
    """Labels as the recipe maps them: named or numeric, at least two, every eval label a known one. Checks that
    need every training label run only when `train_complete`."""
    if not train_complete and data.labels is None:
        return
    names, mapping, n = label_mapping(train_rows, data.labels)
    for where, value in train_rows + (eval_rows or []):
        label_id(value, where, names, mapping, n, data.label_field)
