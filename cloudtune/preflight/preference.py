"""The checks of preference data (`task: preference`). At plan time (`check_preference_samples`, no tokenizer):
every sampled record's shape as `cloudtune.data.preference` reads it, pairs that never differ, and KTO data with one
label only (a warning). The deep check (`check_preference_data`): the shapes, then one record of each conversation
shape rendered as TRL renders it and tokenized with the model's tokenizer.

TRL's trainers render conversational records (`{role, content}` message lists) with the tokenizer's own chat template
(`trl.data_utils.maybe_apply_chat_template`); the spec refuses `train.data.chat_template` for this task, so a model
without a template, or a template that refuses a conversation (e.g. a system message), fails the job in TRL's data
preparation. Both are caught here, with the file and line. Errors are `JobInputError` (exit 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudtune.data.chat import check_messages
from cloudtune.data.preference import check_preference_records, no_pair_differs, one_sided_labels
from cloudtune.errors import JobInputError

if TYPE_CHECKING:
    from cloudtune.spec import TrainSpec

MAX_SHAPES = 20
"""At most this many distinct role sequences are rendered (one record each)."""


def check_preference_samples(samples: dict[str, tuple[list[tuple[str, Any]], bool]], train: "TrainSpec") -> list[str]:
    """Check the sampled records of each input, {role: (records [(where, record)], read whole)}, for
    `train.preference.method`: JobInputError naming the file, line, field and fix for a bad record or data whose
    every pair has chosen == rejected. Returns warnings: KTO training data, read whole, with one label only
    (`cloudtune.data.preference.one_sided_labels`)."""
    method = train.preference.method if train.preference is not None else "dpo"
    warnings: list[str] = []
    for role, (records, complete) in samples.items():
        problem = no_pair_differs(records) if check_preference_records(records, method) else None
        if problem:
            raise JobInputError(problem)
        warning = one_sided_labels(records) if role == "train" and complete and method == "kto" else None
        warnings += [warning] if warning else []
    return warnings


def _conversation(record: dict[str, Any], shape: str, where: str) -> list[dict[str, Any]]:
    """The whole conversation TRL renders for a record: prompt + the judged answer (chosen, or KTO's completion),
    each read by `cloudtune.data.chat.check_messages` (JSON text of a list, as a CSV cell holds it, is parsed); an
    implicit pair's `chosen` is the whole conversation."""
    answer = "completion" if shape == "unpaired" else "chosen"
    prompt = check_messages(record["prompt"], where, "prompt") if record.get("prompt") is not None else []
    return prompt + check_messages(record[answer], where, answer)


def _text(record: dict[str, Any], shape: str) -> str:
    answer = "completion" if shape == "unpaired" else "chosen"
    return str(record.get("prompt") or "") + str(record[answer])


def check_preference_data(records: list[tuple[str, Any]], train: "TrainSpec", tokenizer: Any) -> list[str]:
    """Check `records` [(where, record)] for `train.preference.method`, then render and tokenize one record of each
    shape with `tokenizer`; returns notes. JobInputError naming the record's file and line, the cause and the fix."""
    method = train.preference.method if train.preference is not None else "dpo"
    found = check_preference_records(records, method)
    if found is None:
        return []
    shape, style = found
    if style == "messages" and not getattr(tokenizer, "chat_template", None):
        raise JobInputError(f"{records[0][0]}: the records are conversations ({{role, content}} message lists), which "
                            "TRL renders with the model's own chat template, and this model's tokenizer has none. To "
                            "fix: use a model whose tokenizer has a chat template, or write the fields as plain text")
    seen: dict[tuple[str, ...], tuple[str, Any]] = {}
    for where, record in records:
        roles = tuple(m["role"] for m in _conversation(record, shape, where)) if style == "messages" else ()
        seen.setdefault(roles, (where, record))
        if len(seen) >= MAX_SHAPES:
            break
    for where, record in seen.values():
        if style == "messages":
            try:
                text = tokenizer.apply_chat_template(_conversation(record, shape, where), tokenize=False)
            except Exception as exc:  # noqa: BLE001 - jinja2's errors and the template's raise_exception()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise JobInputError(f"{where}: the model's chat template refused this conversation: {first}. To fix: "
                                    "write the conversation the way the template expects (e.g. merge a system message "
                                    "into the first user turn), or use a model whose template renders it") from None
        else:
            text = _text(record, shape)
        if not tokenizer(text)["input_ids"]:
            raise JobInputError(f"{where}: the record produced no token with this model's tokenizer. To fix: check "
                                "the text, or the tokenizer in train.model")
    return [f"preference data ({shape}, {style}): {len(records)} record(s) checked, {len(seen)} shape(s) rendered and "
            "tokenized"]
