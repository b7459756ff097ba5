"""Preference data shapes, as TRL's trainers read them (no torch, no datasets: the preflight and the recipe share them).

Shapes (TRL's dataset formats, https://huggingface.co/docs/trl/dataset_formats):
- `explicit`: `prompt` + `chosen` + `rejected` (DPO, ORPO, SimPO); plain strings, or conversational (each a list of
  `{role, content}` messages: `prompt` the conversation so far, `chosen` / `rejected` the assistant's reply, so
  'assistant' messages only);
- `implicit`: `chosen` + `rejected` only, each the whole text or conversation (TRL finds the shared prompt: the
  messages both share from the start; the rest of each, its answer, is 'assistant' messages ending the conversation);
- `unpaired`: `prompt` + `completion` + `label` (a boolean: desirable or not) — KTO's shape, `completion` the
  assistant's answer like `chosen`. KTO also reads paired data (TRL unpairs it into one desirable and one
  undesirable example per pair); unpaired data with one label only is warned about (`one_sided_labels`).

`check_preference_records` names the file and line (`where`, as `cloudtune.data.records` gives it), the field and the
fix; errors are `JobInputError` (exit 2).
"""

from __future__ import annotations

import json
from typing import Any

from cloudtune.data.chat import answer_role_problem
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


def _parsed(value: Any, where: str, field: str) -> list[dict[str, Any]] | None:
    """A field value as its messages, or None for plain text: a non-empty string, or a non-empty list of
    {role, content} messages (JSON text of one, as a CSV cell holds it, is parsed). JobInputError otherwise."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return None
        elif not stripped:
            raise JobInputError(f"{where}: field {field!r} is empty. To fix: fill it, or remove the record")
        else:
            return None
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
    return value


def shared_start(chosen: list[Any], rejected: list[Any]) -> int:
    """How many messages TRL takes as the prompt of an implicit conversational pair: those chosen and rejected share
    from the start (`trl.data_utils.extract_prompt`, mirrored: where no message differs, all but the shorter
    one's last). The rest of each is its answer."""
    n = min(len(chosen), len(rejected))
    return next((i for i in range(n) if chosen[i] != rejected[i]), n - 1)


def check_answer_roles(messages: dict[str, list[dict[str, Any]]], where: str) -> None:
    """JobInputError when a conversational record's judged answer holds another role than 'assistant' (TRL trains
    the model to write the whole answer). `messages`: the record's parsed fields. With a prompt, the answer is each
    of chosen / rejected / completion whole; an implicit pair's is what follows the start both share, and each must
    end with the assistant's message."""
    if "prompt" in messages:
        for field in ("chosen", "rejected", "completion"):
            problem = answer_role_problem(messages[field], where, field) if field in messages else None
            if problem:
                raise JobInputError(problem)
        return
    for field in ("chosen", "rejected"):
        last = messages[field][-1]["role"]
        if last != "assistant":
            raise JobInputError(f"{where}: field {field!r} ends with a {last!r} message; it must end with the "
                                f"'assistant' message being judged. To fix: put the assistant's answer last")
    start = shared_start(messages["chosen"], messages["rejected"])
    for field in ("chosen", "rejected"):
        problem = answer_role_problem(messages[field], where, field, start, before=(
            f"the start both conversations share (TRL's prompt is the messages chosen and rejected have in common "
            f"from the first on, here {start}; the rest of each is its answer)"))
        if problem:
            raise JobInputError(problem)


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
    values = {field: _parsed(record[field], where, field) for field in ("prompt", *answers) if field in record}
    if len({value is None for value in values.values()}) > 1:
        raise JobInputError(f"{where}: the fields mix plain text and message lists. To fix: write every field of a "
                            f"record one way (all strings, or all {{role, content}} message lists)")
    messages = {field: value for field, value in values.items() if value is not None}
    if len(messages) < len(values):
        return shape, "text"
    check_answer_roles(messages, where)
    return shape, "messages"


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


def one_sided_labels(records: list[tuple[str, Any]]) -> str | None:
    """The one-line warning when every unpaired (KTO) record of `records` (the whole training data) has the same
    label, else None. TRL's KTOTrainer trains on it without a word beyond a desirable_weight hint computed as if
    the other side had one example: the loss then only pushes these completions up (all desirable: a saturating
    SFT, with no rewards/margins ever logged) or down (all undesirable: unlearning with nothing to prefer instead)
    against the reference, which is no preference to learn. Paired data is unpaired by TRL into both sides."""
    labels = [label_value(r["label"]) for _, r in records if isinstance(r, dict) and "label" in r and "chosen" not in r]
    if not labels or len(labels) != len(records) or len(set(labels)) != 1:
        return None
    desirable = sum(labels)
    missing = "undesirable (label: false)" if labels[0] else "desirable (label: true)"
    return (f"{records[0][0]}: all {len(labels)} KTO records have label {str(labels[0]).lower()} ({desirable} "
            f"desirable, {len(labels) - desirable} undesirable): KTO learns from the contrast between the two, so with "
            f"one side only it just pushes these completions {'up' if labels[0] else 'down'} against the reference "
            f"(and TRL's desirable_weight hint counts the missing side as 1). To fix: add {missing} examples, "
            + ("or train on these completions alone with task: causal-lm (SFT)" if labels[0] else
               "or pair each with a better answer (prompt + chosen + rejected) for dpo"))


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


__all__ = ["LABEL_TEXT", "METHODS", "SHAPES", "check_answer_roles", "check_preference_records", "check_record",
           "identical_pairs", "label_value", "one_sided_labels", "shared_start",
           "no_pair_differs", "record_shape"]
