"""Loss placement in chats: each conversation is rendered once, and the trained spans found in that one rendering are
exactly those of the slow prefix-by-prefix way, for the template families users meet (ChatML, Llama 3, Gemma,
Zephyr, ...); templates with {% generation %} markers use transformers' own assistant mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudtune.spec import DataSpec
from cloudtune.data import chat
from cloudtune.train.data import encode_input
from cloudtune.train.packing import IGNORE

from .conftest import CHAT_TEMPLATE

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
          "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set r = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "{{ '<start_of_turn>' + r + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
ZEPHYR = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
TOOLS = ("{% if tools %}{{ '<tools>' + tools | tojson + '</tools>\\n' }}{% endif %}" + CHATML)
MARKERS = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
           "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
           "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TEMPLATES = {"fixture": CHAT_TEMPLATE, "chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA, "zephyr": ZEPHYR,
             "tools": TOOLS}

CONVERSATION = [
    {"role": "system", "content": "answer briefly"},
    {"role": "user", "content": "Reply with: OK"},
    {"role": "assistant", "content": "OK"},
    {"role": "user", "content": "  and the boat?  "},
    {"role": "assistant", "content": " north at dawn "},
    {"role": "user", "content": "OK"},
    {"role": "assistant", "content": "OK"},
]


@pytest.fixture()
def with_template(tokenizer):
    saved = tokenizer.chat_template

    def use(template: str) -> Any:
        tokenizer.chat_template = template
        return tokenizer

    yield use
    tokenizer.chat_template = saved


def _conversation(name: str) -> list[dict[str, str]]:
    return CONVERSATION[1:] if name == "gemma" else CONVERSATION  # Gemma's templates have no system role


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_one_rendering_finds_the_spans_of_the_prefix_way(name: str, with_template) -> None:
    tok = with_template(TEMPLATES[name])
    messages = _conversation(name)
    trained = [m["role"] == "assistant" for m in messages]
    full, spans = chat.chat_spans(messages, tok)
    assert spans == chat._prefix_spans(messages, full, trained, tok, "r", "t", None)
    assert len(spans) == 3 and all(full[s:e].strip() for s, e in spans)


def test_each_conversation_is_rendered_once(with_template) -> None:
    tok = with_template(CHATML)
    chat.chat_spans(CONVERSATION, tok)  # the template's shape is learnt once
    calls = []
    original = tok.apply_chat_template

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    tok.apply_chat_template = counting
    try:
        long = CONVERSATION + [{"role": r, "content": f"turn {i}"} for i in range(40) for r in ("user", "assistant")]
        _, spans = chat.chat_spans(long, tok)
    finally:
        del tok.apply_chat_template
    assert len(spans) == 43 and len(calls) == 1


def test_a_template_that_rewrites_content_falls_back_to_the_prefix_way(with_template) -> None:
    tok = with_template(CHATML.replace("m['content']", "m['content'] | upper"))
    full, spans = chat.chat_spans(CONVERSATION, tok)
    assert [full[s:e] for s, e in spans] == ["OK<|im_end|>\n", " NORTH AT DAWN <|im_end|>\n", "OK<|im_end|>\n"]


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _learned(tok, row) -> str:
    return tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE])


def test_generation_markers_use_the_templates_own_mask(with_template, tmp_path: Path) -> None:
    tok = with_template(MARKERS)
    enc = encode_input(_write(tmp_path / "c.jsonl", [{"messages": CONVERSATION}]), None, DataSpec(), tok, 256)
    row = enc.dataset[0]
    assert _learned(tok, row) == "OK<|im_end|> north at dawn <|im_end|>OK<|im_end|>"
    assert tok.decode(row["input_ids"]) == tok.apply_chat_template(CONVERSATION, tokenize=False)


def test_conversational_prompt_completion_learns_the_completion_only(with_template, tmp_path: Path) -> None:
    tok = with_template(CHATML)
    rec = {"prompt": [{"role": "user", "content": "where does the boat sail?"}],
           "completion": [{"role": "assistant", "content": "north"}]}
    enc = encode_input(_write(tmp_path / "pc.jsonl", [rec]), None, DataSpec(), tok, 256)
    assert enc.fmt == "instruction" and _learned(tok, enc.dataset[0]) == "north<|im_end|>\n"


def test_the_tools_column_reaches_the_template(with_template, tmp_path: Path) -> None:
    tok = with_template(TOOLS)
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    rec = {"messages": CONVERSATION[1:3], "tools": tools}
    enc = encode_input(_write(tmp_path / "t.jsonl", [rec]), None, DataSpec(), tok, 256)
    text = tok.decode(enc.dataset[0]["input_ids"])
    assert text.startswith("<tools>") and '"weather"' in text and _learned(tok, enc.dataset[0]) == "OK<|im_end|>\n"
