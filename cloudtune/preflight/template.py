"""Plan-time check of the chat template against the data's roles, with jinja2 alone (no transformers, no torch).

The template is `train.data.chat_template`, else the one saved with a local model (tokenizer_config.json's
`chat_template`, or chat_template.jinja). Each distinct sequence of roles in the sampled chat records is rendered
the way the recipe renders it (the whole conversation, and the history before each assistant turn with the
generation prompt); conversational prompt-completion records (TRL's `prompt` + `completion` message lists) as
prompt + completion, and the prompt with the generation prompt. A message field the template never reads is
refused by name (cloudtune.data.chat.unplaced_field). Only what certainly fails in the job is reported: a template that does not compile, and a
template that refuses the conversation with `raise_exception(...)` ("System role not supported", "roles must
alternate"). Anything else the simplified environment cannot render is left to the deep check and the job, so a
valid template is never refused here. Without jinja2 installed the check is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudtune.data.chat import TEMPLATE_OPTION, check_messages, check_tools, template_fix, unplaced_field
from cloudtune.errors import JobInputError

MAX_SHAPES = 20
TEMPLATE_OPTION_NAME = "train.data.chat_template"  # cloudtune.data.chat.TEMPLATE_OPTION


def model_template(model_dir: Path | None) -> tuple[str | None, dict[str, Any]]:
    """(the chat template saved with a local model, its special tokens), or (None, {})."""
    if model_dir is None:
        return None, {}
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    tokens = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    return (template if isinstance(template, str) else None), tokens


class _Refusal(Exception):
    """`raise_exception(message)` in a template."""


def _compile(template: str) -> Any:
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # transformers' {% generation %} block: render its body
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str) -> None:
        raise _Refusal(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


Conversation = tuple[str, list[dict[str, Any]], list[tuple[list[dict[str, Any]], bool]]]


def _conversation(rec: Any, data: Any, fmt: str, where: str) -> tuple[list[tuple[str, list]], list] | None:
    """([(field, messages)], the renders the recipe makes) of one record, or None when it is not conversational
    (a plain prompt/completion) or its fields do not check (reported by the field checks)."""
    if not isinstance(rec, dict):
        return None
    try:
        if fmt == "chat":
            field = data.messages_field
            messages = check_messages(rec.get(field), where, field)
            renders = [(messages, False)] + [(messages[:i], True) for i, m in enumerate(messages)
                                             if m["role"] == "assistant" and i]
            return [(field, messages)], renders
        if isinstance(rec.get(data.prompt_field), str):
            return None
        prompt = check_messages(rec.get(data.prompt_field), where, data.prompt_field)
        completion = check_messages(rec.get(data.completion_field), where, data.completion_field)
    except JobInputError:
        return None
    return ([(data.prompt_field, prompt), (data.completion_field, completion)],
            [(prompt + completion, False), (prompt, True)])  # as cloudtune.data.chat.completion_spans renders


def _tools(rec: Any, where: str) -> list[dict[str, Any]] | None:
    """The record's `tools` column as the recipe passes it to the template (`tools=`); None when absent or bad
    (a bad one is reported by the field checks)."""
    try:
        return check_tools(rec.get("tools"), where)
    except JobInputError:
        return None


def _shapes(records: list[tuple[str, Any]], data: Any, fmt: str, template: str,
            option: str) -> tuple[list[tuple[str, list, Any]], str | None]:
    """(the renders of one record per distinct sequence of roles, the first unplaced message field's error)."""
    seen: dict[tuple[str, ...], tuple[str, list, Any]] = {}
    for where, rec in records:
        found = _conversation(rec, data, fmt, where)
        if found is None:
            continue
        fields, renders = found
        tools = _tools(rec, where)
        for field, messages in fields:
            problem = unplaced_field(messages, template, where, field, option)
            if problem:
                return [], problem
        roles = tuple(m["role"] for _, messages in fields for m in messages)
        if len(seen) < MAX_SHAPES:
            seen.setdefault(roles + (("tools",) if tools else ()), (where, renders, tools))
    return list(seen.values()), None


def template_problem(records: list[tuple[str, Any]], data: Any, model_dir: Path | None, fmt: str = "chat") -> str | None:
    """The first certain failure of the chat template on the conversational `records` (`fmt` chat, or instruction
    with message-list prompts and completions: TRL's conversational prompt-completion), as the recipe would word
    it, or None: a template that does not compile, a message field it never reads, or its raise_exception()."""
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 comes with the training extras
        return None

    saved, tokens = model_template(model_dir)
    template, option = (data.chat_template, TEMPLATE_OPTION) if data.chat_template else (saved, "the model's own chat template")
    if not template:
        return _no_template_problem(records, data, fmt, model_dir)
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        return f"{option}: not a valid Jinja template: {exc.message} (template line {exc.lineno}); fix it or set {TEMPLATE_OPTION}"
    shapes, problem = _shapes(records, data, fmt, template, option)
    if problem:
        return problem
    for where, renders, tools in shapes:
        for history, generation_prompt in renders:
            try:
                compiled.render(messages=history, tools=tools, add_generation_prompt=generation_prompt, **tokens)
            except _Refusal as exc:
                return (f"{where}: the chat template ({option}) refused this conversation: {exc}; "
                        f"{template_fix(str(exc))}")
            except Exception:  # noqa: BLE001 - beyond this simplified environment: the deep check decides
                break
    return None


# where else transformers finds a tokenizer's chat template (a processor's file, named templates)
OTHER_TEMPLATE_FILES = ("chat_template.json", "additional_chat_templates")


def _no_template_problem(records: list[tuple[str, Any]], data: Any, fmt: str, model_dir: Path | None) -> str | None:
    """The recipe's refusal of conversational data when neither the spec nor the local model gives a chat template
    (cloudtune.train.data: "the chat data format needs a chat template"); None for a hub model (its template is
    not read here) or data that is not conversational."""
    if model_dir is None or any((model_dir / name).exists() for name in OTHER_TEMPLATE_FILES):
        return None
    if not any(_conversation(rec, data, fmt, where) for where, rec in records[:MAX_SHAPES]):
        return None
    return (f"{TEMPLATE_OPTION_NAME}: the chat data format needs a chat template, and this model's tokenizer has none "
            f"(no chat_template in tokenizer_config.json, no chat_template.jinja). To fix: set "
            f"{TEMPLATE_OPTION_NAME} (a Jinja template rendering `messages`) or use a model whose tokenizer has one")
