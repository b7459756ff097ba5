"""Preference data shapes, as TRL's trainers read them (no torch, no datasets: the preflight and the recipe share them).

Shapes (TRL's dataset formats, https://huggingface.co/docs/trl/dataset_formats):
- `explicit`: `prompt` + `chosen` + `rejected` (DPO, ORPO, SimPO); plain strings, or conversational (each a list of
  `{role, content}` messages: `prompt` the conversation so far, `chosen` / `rejected` the assistant's reply);
- `implicit`: `chosen` + `rejected` only, each the whole text or conversation (TRL finds the shared prompt);
- `unpaired`: `prompt` + `completion` + `label` (a boolean: desirable or not) — KTO's shape. KTO also reads paired
  data (TRL unpairs it into one desirable and one undesirable example per pair).

`check_preference_records` names the file and line (`where`, as `cloudtune.data.records` gives it), the field and the
fix; errors are `JobInputError` (exit 2).
"""

from __future__ import annotations

import json
from typing import Any

from cloudtune.errors import JobInputError

METHODS = ("dpo", "orpo", "kto", "simpo")
PAIRED_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")
SHAPES = ("explicit", "implicit", "unpaired")


def record_shape(record: Any, where: str) -> str:
    """The shape of one record: explicit, implicit or unpaired (see the module doc); JobInputError otherwise."""
    if not isinstance(record, dict):
        raise JobInputError(f"{where}: a preference record must be an object with fields chosen + rejected (and "
                            f"prompt), or prompt + completion + label; got {type(record).__name__}")
    keys = set(record)
    if {"chosen", "rejected"} <= keys:
        return "explicit" if "prompt" in keys else "implicit"
    if {"completion", "label"} <= keys:
        if "prompt" not in keys:
            raise JobInputError(f"{where}: field 'prompt' is missing: an unpaired (KTO) record has prompt + "
                                f"completion + label. To fix: add the prompt the completion answers")
        return "unpaired"
    present = sorted(keys & {"prompt", "chosen", "rejected", "completion", "label"})
    missing = [f for f in ("chosen", "rejected") if f not in keys] if ({"chosen", "rejected"} & keys or not present) \
        else [f for f in UNPAIRED_FIELDS if f not in keys]
    raise JobInputError(f"{where}: field {missing[0]!r} is missing (the record has {', '.join(present) or 'none of the preference fields'}). "
                        f"To fix: give prompt + chosen + rejected (the better and the worse answer), chosen + rejected "
                        f"(whole texts), or for KTO prompt + completion + label (true = a desirable answer)")


def _text_or_messages(value: Any, where: str, field: str, role: str | None) -> str:
    """'text' or 'messages' for a field value: a non-empty string, or a non-empty list of {role, content} messages
    (JSON text of one, as a CSV cell holds it, is parsed); `role`: the role the last message must have."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return "text"
        elif not stripped:
            raise JobInputError(f"{where}: field {field!r} is empty. To fix: fill it, or remove the record")
        else:
            return "text"
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise JobInputError(f"{where}: field {field!r} must be a string or a non-empty list of {{role, content}} "
                            f"messages, got {type(value).__name__}. To fix: write the text, or the messages")
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise JobInputError(f"{where}: field {field!r}, message {i}: each message needs a string 'role' and a "
                                f"string 'content'. To fix: write it as {{\"role\": \"assistant\", \"content\": \"...\"}}")
    if role is not None and value[-1]["role"] != role:
        raise JobInputError(f"{where}: field {field!r} ends with a {value[-1]['role']!r} message; it must end with "
                            f"the {role!r} message being judged. To fix: put the {role}'s answer last")
    return "messages"


LABEL_TEXT = {"true": True, "false": False, "1": True, "0": False}
"""KTO's `label` as a CSV cell holds it (every cell is text): true/false in any case, or 1/0."""


def label_value(label: Any) -> bool | None:
    """A KTO label as TRL's boolean column: a boolean as is, its text (`LABEL_TEXT`) or 0/1 as a number; None when it
    is none of these."""
    if isinstance(label, bool):
        return label
    if isinstance(label, int) and label in (0, 1):
        return bool(label)
    if isinstance(label, str):
        return LABEL_TEXT.get(label.strip().lower())
    return None


def check_record(record: Any, where: str, method: str) -> tuple[str, str]:
    """(shape, style) of one record for `method` (style: text or messages); JobInputError naming `where`, the
    field and the fix. An unpaired record is KTO's only; every field of a record is one style."""
    shape = record_shape(record, where)
    if shape == "unpaired" and method != "kto":
        raise JobInputError(f"{where}: an unpaired record (prompt + completion + label) is read by "
                            f"train.preference.method kto only; {method} needs pairs. To fix: give chosen + rejected, "
                            f"or set method: kto")
    if shape == "unpaired":
        label = record["label"]
        if label_value(label) is None:
            raise JobInputError(f"{where}: field 'label' must be true or false (is this completion desirable?), "
                                f"got {label!r}. To fix: write true or false (in a CSV cell: true, false, 1 or 0)")
        answers = ("completion",)
    else:
        answers = ("chosen", "rejected")
    styles = set()
    if "prompt" in record:
        styles.add(_text_or_messages(record["prompt"], where, "prompt", None))
    for field in answers:
        styles.add(_text_or_messages(record[field], where, field, "assistant" if "prompt" not in record else None))
    if len(styles) > 1:
        raise JobInputError(f"{where}: the fields mix plain text and message lists. To fix: write every field of a "
                            f"record one way (all strings, or all {{role, content}} message lists)")
    return shape, styles.pop()


def identical_pairs(records: list[tuple[str, Any]]) -> list[str]:
    """Where (file, line) each pair has the same chosen and rejected answer: such a pair has a zero margin whatever
    the model does, so it teaches nothing (a tie, or a copying mistake)."""
    return [where for where, r in records if isinstance(r, dict) and "chosen" in r and "rejected" in r
            and r["chosen"] == r["rejected"]]


def no_pair_differs(records: list[tuple[str, Any]]) -> str | None:
    """The one-line problem when every pair of `records` (paired data) has chosen == rejected, else None."""
    same = identical_pairs(records)
    if records and len(same) == len(records):
        return (f"{records[0][0]}: every pair has the same chosen and rejected answer, so preference tuning has "
                f"nothing to learn (every margin is 0). To fix: give the better answer in chosen and the worse in "
                f"rejected")
    return None


def check_preference_records(records: list[tuple[str, Any]], method: str) -> tuple[str, str] | None:
    """Check every (where, record); all records must share one shape and style (TRL reads a dataset one way).
    Returns (shape, style) of the data, None when there are no records."""
    first: tuple[str, str] | None = None
    first_where = ""
    for where, record in records:
        got = check_record(record, where, method)
        if first is None:
            first, first_where = got, where
        elif got != first:
            raise JobInputError(f"{where}: a {got[1]} record of shape {got[0]}, where {first_where} is a {first[1]} "
                                f"record of shape {first[0]}. To fix: give every record the same fields, written the "
                                f"same way")
    return first


__all__ = ["LABEL_TEXT", "METHODS", "SHAPES", "check_preference_records", "check_record", "identical_pairs",
           "label_value",
           "no_pair_differs", "record_shape"]
