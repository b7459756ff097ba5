"""The causal-LM recipe's encoding of records into training examples, torch-free: TRL's shapes `text` (loss on every
token), `prompt` + `completion` (plain or as message lists; loss on the completion) and `messages` (+ `tools`; loss on
the assistant turns, each conversation rendered once: `cloudtune.data.chat`). Each example is
`{"input_ids", "labels", "length"}`, labels `IGNORE` (-100, what PyTorch's cross-entropy skips) where there is no loss.

The job maps `encode_batch` over 🤗 Datasets batches (`cloudtune.train.data`); the plan-time checks encode a sample
with `encode_records` and the model's tokenizer, so both refuse the same record with the same line.
"""

from __future__ import annotations

import re
from typing import Any

from cloudtune.data import chat
from cloudtune.data.records import detect_format, where_field
from cloudtune.errors import JobInputError

IGNORE = -100  # the label of a token with no loss (torch.nn.CrossEntropyLoss's default ignore_index)
WHERE = "\x00where\x00"  # stands for a record's `file, line N` in an error raised inside `map`, filled in outside


def _encode_text(batch: dict[str, list], data: Any, tokenizer: Any, max_len: int) -> list[tuple[list[int], list[int]] | None]:
    texts = [where_field({k: v[i] for k, v in batch.items()}, data.text_field, WHERE.replace("where", str(i)),
                          "train.data.text_field") for i in range(len(next(iter(batch.values()))))]
    eos = tokenizer.eos_token_id
    limit = max_len - 1 if eos is not None else max_len
    ids = tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]
    out: list[tuple[list[int], list[int]] | None] = []
    for text, row in zip(texts, ids):
        row = list(row)
        if eos is not None and (not row or row[-1] != eos):
            row.append(eos)
        row = row[:max_len]
        out.append((row, list(row)) if text.strip() and row else None)
    return out


def _cut(ids: list[int], trained: list[bool], max_len: int) -> tuple[list[int], list[int]] | None:
    ids, trained = ids[:max_len], trained[:max_len]
    if not any(trained):
        return None  # nothing left to learn from (the completion was cut off, or is empty)
    return ids, [t if keep else IGNORE for t, keep in zip(ids, trained)]


def _encode_plain_pairs(prompts: list[str], completions: list[str], tokenizer: Any, max_len: int) -> list[Any]:
    """prompt (no loss) + completion + EOS (loss); the two parts tokenised apart, so the boundary is exact."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    return [_cut(list(p) + list(c) + eos, [False] * len(p) + [True] * (len(c) + len(eos)), max_len)
            for p, c in zip(p_ids, c_ids)]


def _label_spans(tokenizer: Any, texts: list[str], spans: list[list[chat.Span]], max_len: int) -> list[Any]:
    """Tokenise rendered conversations (the template brings its own special tokens); a token has loss when it
    starts inside a trained span. Slow tokenizers: each piece tokenised apart."""
    if not texts:
        return []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for ids, offsets, sp in zip(enc["input_ids"], enc["offset_mapping"], spans):
            trained = [any(s <= start < e for s, e in sp) for start, _ in offsets]
            out.append(_cut(list(ids), trained, max_len))
        return out
    out = []
    for text, sp in zip(texts, spans):
        ids: list[int] = []
        trained: list[bool] = []
        for piece, learn in chat.segments(text, sp):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids += piece_ids
            trained += [learn] * len(piece_ids)
        out.append(_cut(ids, trained, max_len))
    return out


def _encode_conversations(rows: list[dict[str, Any]], fmt: str, data: Any, tokenizer: Any, max_len: int) -> list[Any]:
    option = chat.template_option(data)
    markers = chat.has_generation_markers(getattr(tokenizer, "chat_template", None))
    texts: list[str] = []
    spans: list[list[chat.Span]] = []
    done: dict[int, Any] = {}
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else None
    for i, rec in enumerate(rows):
        where = WHERE.replace("where", str(i))
        tools = chat.check_tools(rec.get("tools"), where)
        if fmt == "chat":
            raw = where_field(rec, data.messages_field, where, "train.data.messages_field", kind=object)
            messages = chat.check_messages(raw, where, data.messages_field)
            chat.require_assistant(messages, where)
            chat.require_placed(messages, template, where, data.messages_field, option)
            if markers:
                done[i] = _cut(*chat.marker_encode(messages, tokenizer, tools, where, option), max_len)
                continue
            text, sp = chat.chat_spans(messages, tokenizer, where, option, tools)
        else:
            prompt = chat.check_messages(rec[data.prompt_field], where, data.prompt_field)
            completion = chat.check_messages(rec[data.completion_field], where, data.completion_field)
            chat.require_placed(prompt, template, where, data.prompt_field, option)
            chat.require_placed(completion, template, where, data.completion_field, option)
            text, sp = chat.completion_spans(prompt, completion, tokenizer, where, option, tools)
        texts.append(text)
        spans.append(sp)
    encoded = iter(_label_spans(tokenizer, texts, spans, max_len))
    return [done[i] if i in done else next(encoded) for i in range(len(rows))]


def _rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def encode_batch(batch: dict[str, list], fmt: str, data: Any, tokenizer: Any, max_len: int) -> dict[str, list]:
    """A `map` batch of records -> `input_ids`, `labels`, `length` (0 for an example with nothing to learn after
    truncation, dropped afterwards). A JobInputError names the record as `WHERE` with its index in the batch."""
    if fmt == "text":
        encoded = _encode_text(batch, data, tokenizer, max_len)
    else:
        rows = _rows(batch)
        for i, rec in enumerate(rows):
            if fmt == "instruction":
                where_field(rec, data.prompt_field, WHERE.replace("where", str(i)), "train.data.prompt_field", kind=(str, list))
                where_field(rec, data.completion_field, WHERE.replace("where", str(i)), "train.data.completion_field", kind=(str, list))
        if fmt == "instruction" and all(isinstance(r[data.prompt_field], str) for r in rows):
            bad = next((i for i, r in enumerate(rows) if not isinstance(r[data.completion_field], str)), None)
            if bad is not None:
                raise JobInputError(f"{WHERE.replace('where', str(bad))}: field {data.completion_field!r} must be a string like the prompt")
            encoded = _encode_plain_pairs([r[data.prompt_field] for r in rows], [r[data.completion_field] for r in rows],
                                          tokenizer, max_len)
        else:
            encoded = _encode_conversations(rows, fmt, data, tokenizer, max_len)
    ids = [e[0] if e else [] for e in encoded]
    return {"input_ids": ids, "labels": [e[1] if e else [] for e in encoded], "length": [len(x) for x in ids]}


def need_template(tokenizer: Any, data: Any) -> None:
    if data.chat_template is not None:
        tokenizer.chat_template = data.chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise JobInputError(
            "the chat data format needs a chat template, and this model's tokenizer has none: set "
            "train.data.chat_template (a Jinja template rendering `messages`) or use a model whose tokenizer has one"
        )


def encode_records(records: list[tuple[str, Any]], data: Any, tokenizer: Any, max_len: int,
                   fmt: str | None = None) -> tuple[list[dict[str, list[int]]], str, int]:
    """Encode records read by `cloudtune.data.records` ((where, record) pairs; the preflight's sample) exactly as
    the job encodes them. Returns (examples, format, number dropped by truncation); errors name each record's
    `where`."""
    if not records:
        raise JobInputError("no records to train on")
    fmt = fmt or detect_format(records[0][1], data, records[0][0])
    for where, rec in records:
        if not isinstance(rec, dict):
            where_field(rec, data.text_field, where, "train.data.text_field")
    if fmt == "chat" or (fmt == "instruction" and not isinstance(records[0][1].get(data.prompt_field), str)):
        need_template(tokenizer, data)
    keys = {k for _, rec in records for k in rec}
    batch = {k: [rec.get(k) for _, rec in records] for k in keys}
    try:
        out = encode_batch(batch, fmt, data, tokenizer, max_len)
    except JobInputError as exc:
        raise JobInputError(re.sub("\x00(\\d+)\x00", lambda m: records[int(m.group(1))][0], str(exc))) from None
    examples = [{"input_ids": i, "labels": lab} for i, lab, n in zip(out["input_ids"], out["labels"], out["length"]) if n]
    if not examples:
        raise JobInputError(
            f"no example has a token to learn from after tokenisation and truncation to max_seq_len={max_len} "
            f"({len(records)} dropped); raise train.hyperparameters.max_seq_len or shorten the prompts")
    return examples, fmt, len(records) - len(examples)
