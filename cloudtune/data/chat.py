"""Conversations in, trained character spans out: where the loss goes in a chat rendered by its template.

TRL's dataset shapes: `messages` (conversational language modeling; loss on the assistant turns only) and
`prompt` + `completion` as message lists (conversational prompt-completion; loss on the completion only), with an
optional `tools` column (JSON schemas, passed to the template as `tools=`). Messages are `{role, content}`, plus
any other field the template reads, passed on as it is: `tool_calls` / `name` / `tool_call_id`, and the reasoning
of Qwen3 / DeepSeek-R1-style data (`reasoning_content`, rendered in a <think> block, inside the assistant turn's
loss). A field the template never reads would be dropped without a word, so it is refused by name
(`unplaced_field`); a null field counts as absent.

Each conversation is rendered ONCE. An assistant turn is its content plus the template's end-of-turn text (what
`add_generation_prompt` leaves out and the model must learn to emit), located in that one rendering:

* a template with `{% generation %}` markers: transformers' own assistant mask (`return_assistant_tokens_mask`,
  TRL's `assistant_only_loss` convention), exact;
* any other template: each message's content is found in order in the rendering; an assistant content counts when
  it directly follows the template's generation prompt and is directly followed by its end-of-turn text (both
  learnt once per template from a two-message probe). A conversation where that does not hold (a template that
  rewrites content, tool calls rendered from structured fields) falls back to rendering each prefix (the slow,
  exact way: the text the template adds after the generation prompt), so the loss is never put in the wrong place.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from cloudtune.errors import JobInputError

TEMPLATE_OPTION = "train.data.chat_template"
Span = tuple[int, int]
_PROBE_USER = "ct-probe-user-7f3a"
_PROBE_ASSISTANT = "ct-probe-assistant-9c1e"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def check_messages(messages: Any, where: str, field: str) -> list[dict[str, Any]]:
    """`messages` as a list of message dicts (a JSON string, as CSV cells hold it, is parsed); JobInputError naming
    `where` and `field` when it is not a non-empty list of messages with a string role and a string content (an
    assistant message may carry `tool_calls` instead of content) or has no assistant message."""
    if isinstance(messages, str):  # CSV cells and some exports hold the list as JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise JobInputError(f"{where}: field {field!r} must be a list of {{role, content}} messages, got a string that is "
                                f"not JSON. To fix: write it as a list, e.g. [{{\"role\": \"user\", \"content\": \"...\"}}]") from None
    if hasattr(messages, "tolist"):
        messages = messages.tolist()
    if not isinstance(messages, list) or not messages:
        raise JobInputError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        content_ok = isinstance(m, dict) and (isinstance(m.get("content"), str) or (calls and m.get("content") is None))
        if not content_ok or not isinstance(m.get("role"), str):
            raise JobInputError(f"{where}: {field}[{i}] must be an object with string 'role' and 'content'")
        msg = {k: v for k, v in m.items() if v is not None}  # every field reaches the template: see unplaced_field
        if "content" not in msg:
            msg["content"] = ""
        out.append(msg)
    return out


MESSAGE_CORE = ("role", "content")  # the fields the recipe itself reads; the template must read every other one


@lru_cache(maxsize=8)
def _template_names(template: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", template))


def unplaced_field(messages: list[dict[str, Any]], template: str | None, where: str, field: str,
                   option: str) -> str | None:
    """The error for the first message field (beyond role and content) that the chat `template` never names, so
    rendering would drop it without a word (e.g. `reasoning_content` under a template without reasoning), or None.
    A template that names the field (`message.reasoning_content`, `m['tool_calls']`) places it."""
    if not template:
        return None
    names = _template_names(template)
    for i, m in enumerate(messages):
        for key in m:
            if key not in MESSAGE_CORE and str(key) not in names:
                return (f"{where}: {field}[{i}] has field {key!r}, which the chat template ({option}) never reads, so "
                        f"it would be dropped from training without a word. To fix: remove the field, move it into "
                        f"'content', or set {TEMPLATE_OPTION} to a template that renders it")
    return None


def require_placed(messages: list[dict[str, Any]], template: str | None, where: str, field: str, option: str) -> None:
    """JobInputError for a message field the template cannot place (see `unplaced_field`)."""
    problem = unplaced_field(messages, template, where, field, option)
    if problem:
        raise JobInputError(problem)


def require_assistant(messages: list[dict[str, Any]], where: str) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise JobInputError(f"{where}: the conversation has no 'assistant' message, so nothing to learn from (loss is on "
                            f"assistant turns only). To fix: add the assistant's reply, or remove the record")


OTHER_ROLES = ("system", "developer", "user", "tool", "ipython", "function")
"""The chat roles, besides 'assistant', that templates render (OpenAI's `developer`, Llama 3.1's `ipython`, the
older `function`): turns of the conversation so far, never the model's own answer."""


def answer_role_problem(messages: list[dict[str, Any]], where: str, field: str, start: int = 0,
                        before: str = "field 'prompt'") -> str | None:
    """The error for the first message from index `start` of `messages` whose role is not 'assistant', or None.
    Those messages are an answer the model is trained to write as a whole (TRL's conversational chosen / rejected /
    completion), so any other role's text would be trained as the model's own. A known role's fix moves the
    message to `before` (where the conversation so far goes); an unknown one (`bot`, `gpt`) is told to say
    'assistant'."""
    for i in range(start, len(messages)):
        role = messages[i].get("role")
        if role == "assistant":
            continue
        fix = (f"move the {role!r} message into {before}" if role in OTHER_ROLES else
               f"write role 'assistant' ({role!r} is not a role chat templates give the model's answer)")
        return (f"{where}: field {field!r}, message {i} has role {role!r}; {field} is the answer being judged, which "
                f"the model is trained to write whole, so it holds 'assistant' messages only. To fix: {fix}")
    return None


def check_tools(tools: Any, where: str) -> list[dict[str, Any]] | None:
    """The `tools` column: a list of tool (function) JSON schemas, or JSON text of one; None when empty."""
    if tools is None:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise JobInputError(f"{where}: field 'tools' must be a list of tool schemas (JSON), got text that is not JSON") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise JobInputError(f"{where}: field 'tools' must be a list of tool schemas (objects)")
    return tools or None


def template_fix(message: str) -> str:
    text = message.lower()
    if "system" in text:
        return ("merge the system message into the first user turn, or use a template that supports a system role "
                f"({TEMPLATE_OPTION})")
    if "alternate" in text or "role" in text:
        return ("make the turns alternate as the template expects (user, assistant, user, ...), or use another "
                f"template ({TEMPLATE_OPTION})")
    return f"fix the conversation, or give a template that renders it ({TEMPLATE_OPTION})"


def render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, where: str = "a record",
           option: str = "the tokenizer's chat template", tools: list[dict[str, Any]] | None = None) -> str:
    """The conversation rendered by the chat template. A template that refuses it (raise_exception) or does not
    compile is a JobInputError naming `where`, the template (`option`) and a fix."""
    if not messages:
        return ""
    from jinja2.exceptions import TemplateError, TemplateSyntaxError

    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except TemplateSyntaxError as exc:
        raise JobInputError(f"{option}: not a valid Jinja template: {exc.message} (template line {exc.lineno}); "
                            f"fix it or set {TEMPLATE_OPTION}") from None
    except TemplateError as exc:
        message = str(exc.message if getattr(exc, "message", None) else exc)
        raise JobInputError(f"{where}: the chat template ({option}) refused this conversation: {message}; "
                            f"{template_fix(message)}") from None
    if not isinstance(text, str):  # pragma: no cover - a batched answer
        text = text[0]
    return text


def has_generation_markers(template: str | None) -> bool:
    """Whether a chat template marks assistant output with `{% generation %}` (transformers' assistant mask)."""
    return bool(template) and bool(_GENERATION_TAG.search(template))


@lru_cache(maxsize=8)
def _turn_shape(template: str, tokenizer: Any) -> tuple[str, str] | None:
    """(generation prompt, end-of-turn text) of a template, from a two-message probe; None when the probe does not
    render as expected (then every conversation takes the prefix-by-prefix way)."""
    user = [{"role": "user", "content": _PROBE_USER}]
    try:
        bare = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
        prompted = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _PROBE_ASSISTANT}],
                                             tokenize=False, add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that refuses the probe (e.g. requires a system message)
        return None
    at = full.find(_PROBE_ASSISTANT)
    if not (isinstance(full, str) and prompted.startswith(bare) and at >= 0 and full[:at] == prompted):
        return None
    return prompted[len(bare):], full[at + len(_PROBE_ASSISTANT):]


def _found_spans(messages: list[dict[str, Any]], full: str, shape: tuple[str, str], trained: list[bool]) -> list[Span] | None:
    """The trained spans located in one rendering (see the module doc), or None when a trained turn is not where
    the template's shape says it must be."""
    gen_prompt, turn_end = shape
    spans: list[Span] = []
    pos = 0
    for m, train in zip(messages, trained):
        content = m.get("content") or ""
        if not content and not train:
            continue
        at = -1
        for text in (content, content.strip()):
            at = full.find(text, pos) if text else -1
            if at >= 0:
                content = text
                break
        if not train:
            if at >= 0:
                pos = at + len(content)
            continue
        if at < 0 or m.get("tool_calls") or not full[:at].endswith(gen_prompt) or not full.startswith(turn_end, at + len(content)):
            return None
        end = at + len(content) + len(turn_end)
        spans.append((at, end))
        pos = end
    return spans


def _prefix_spans(messages: list[dict[str, Any]], full: str, trained: list[bool], tokenizer: Any, where: str,
                  option: str, tools: list[dict[str, Any]] | None) -> list[Span]:
    """The trained spans by rendering each prefix: a turn is the text between the rendering of the history with the
    generation prompt and the rendering that includes the turn. Needs each rendering to be a prefix of `full`."""
    spans: list[Span] = []
    pos = 0
    for i, train in enumerate(trained):
        if not train:
            continue
        prompt = render(tokenizer, messages[:i], True, where, option, tools)
        start = len(prompt) if i else 0
        end_text = render(tokenizer, messages[: i + 1], False, where, option, tools)
        if not (full.startswith(end_text) and full.startswith(prompt) and pos <= start <= len(end_text)):
            raise JobInputError(
                f"{where}: the chat template ({option}) does not render conversations prefix by prefix, so assistant "
                f"turns cannot be located for loss masking; use a template that does (set {TEMPLATE_OPTION})"
            )
        spans.append((start, len(end_text)))
        pos = len(end_text)
    return spans


def trained_spans(messages: list[dict[str, Any]], trained: list[bool], tokenizer: Any, where: str = "a record",
                  option: str = "the tokenizer's chat template",
                  tools: list[dict[str, Any]] | None = None) -> tuple[str, list[Span]]:
    """(the rendered conversation, the character spans with loss): each message whose `trained` flag is set, as
    its content plus the template's end-of-turn text. One rendering, or the prefix-by-prefix way (see module)."""
    full = render(tokenizer, messages, False, where, option, tools)
    shape = _turn_shape(tokenizer.chat_template, tokenizer) if isinstance(tokenizer.chat_template, str) else None
    spans = _found_spans(messages, full, shape, trained) if shape is not None else None
    if spans is None:
        spans = _prefix_spans(messages, full, trained, tokenizer, where, option, tools)
    return full, spans


def chat_spans(messages: list[dict[str, Any]], tokenizer: Any, where: str = "a record",
               option: str = "the tokenizer's chat template", tools: list[dict[str, Any]] | None = None
               ) -> tuple[str, list[Span]]:
    """A `messages` conversation: loss on every assistant turn."""
    return trained_spans(messages, [m["role"] == "assistant" for m in messages], tokenizer, where, option, tools)


def completion_spans(prompt: list[dict[str, Any]], completion: list[dict[str, Any]], tokenizer: Any,
                     where: str = "a record", option: str = "the tokenizer's chat template",
                     tools: list[dict[str, Any]] | None = None) -> tuple[str, list[Span]]:
    """A conversational prompt-completion: loss on everything the completion adds after the prompt rendered with
    the generation prompt (TRL's convention), else on the completion's messages located as turns."""
    full = render(tokenizer, prompt + completion, False, where, option, tools)
    head = render(tokenizer, prompt, True, where, option, tools)
    if full.startswith(head) and len(full) > len(head):
        return full, [(len(head), len(full))]
    return trained_spans(prompt + completion, [False] * len(prompt) + [True] * len(completion), tokenizer, where,
                         option, tools)


def segments(full: str, spans: list[Span]) -> list[tuple[str, bool]]:
    """`full` cut into (text, trained) pieces at the spans' edges; empty pieces left out."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for start, end in spans:
        pieces += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    pieces.append((full[pos:], False))
    return [(t, a) for t, a in pieces if t]


def chat_segments(messages: list[dict[str, Any]], tokenizer: Any, where: str = "a record",
                  option: str = "the tokenizer's chat template") -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_assistant_turn) pieces."""
    return segments(*chat_spans(messages, tokenizer, where, option))


def template_option(data: Any) -> str:
    """How errors name the chat template in use: the spec's option when it gives one, else the tokenizer's own."""
    return TEMPLATE_OPTION if getattr(data, "chat_template", None) else "the model's own chat template"


def marker_encode(messages: list[dict[str, Any]], tokenizer: Any, tools: list[dict[str, Any]] | None,
                  where: str, option: str) -> tuple[list[int], list[bool]]:
    """(token ids, trained flags) of a conversation through a template with `{% generation %}` markers:
    transformers' `return_assistant_tokens_mask` (TRL's `assistant_only_loss`)."""
    from jinja2.exceptions import TemplateError

    try:
        out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    except TemplateError as exc:
        message = str(getattr(exc, "message", None) or exc)
        raise JobInputError(f"{where}: the chat template ({option}) refused this conversation: {message}; "
                            f"{template_fix(message)}") from None
    ids = list(out["input_ids"])
    return ids, [bool(x) for x in out["assistant_masks"]]
