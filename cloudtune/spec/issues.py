"""Spec problems as `SpecIssue`s: pydantic's errors and unusable text, each named by its field path and its YAML
line (or the `--set` flag that gave the value)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from cloudtune.errors import SpecIssue
from cloudtune.spec.base import shown
from cloudtune.spec.job import JobSpec
from cloudtune.spec.origin import field_path, longest_prefix
from cloudtune.spec.yamlload import MAX_DEPTH

def _model_for_path(path: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = JobSpec
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def issues_from(error: ValidationError, lines: dict[tuple[str, ...], int],
                 overridden: dict[tuple[str, ...], str]) -> list[SpecIssue]:
    """One SpecIssue per pydantic error; a value set by `--set` is named as such instead of by a YAML line."""
    import difflib

    issues: list[SpecIssue] = []
    for err, loc in _relevant(error.errors(include_url=False))[:MAX_ISSUES]:
        kind = err["type"]
        secret = bool(loc) and loc[0] == "secrets"
        msg, _, hint = str(err["msg"]).removeprefix("Value error, ").partition("\nTo fix: ")  # a fix given with it
        if kind == "extra_forbidden":
            parent = _model_for_path(loc[:-1])
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(loc[-1][:100], known, n=1, cutoff=0.6)
            msg = f"unknown key {shown(loc[-1])}"
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(known)}" if known else "remove it")
        elif kind == "missing":
            msg = "this field is required"
            hint = f"add `{loc[-1]}:` to the spec"
        elif kind == "literal_error":
            hint = "use one of the listed values"
        elif kind in _BOUND_HINTS and _BOUND_HINTS[kind][0] in (err.get("ctx") or {}):
            key, template = _BOUND_HINTS[kind]
            hint = template.format(err["ctx"][key])
        elif kind == "finite_number":
            hint = "give a finite number (.inf and .nan are not numbers a job can use)"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            got = "" if secret else f"got {shown(err.get('input'))}; "  # a secret's value is never echoed
            hint = got + _TYPE_HINTS.get(kind.split("_")[0], "give a value of the type named above")
        if kind == "value_error":
            loc = _named_field(msg, loc, lines)
        line = None
        override = longest_prefix(loc, overridden)
        if override is not None:
            msg = f"{msg} (from --set {override.partition('=')[0] + '=...' if secret else override})"
        else:
            line = longest_prefix(loc, lines)
        issues.append(SpecIssue(path=field_path(loc), message=msg, line=line, hint=hint))
    if error.error_count() > MAX_ISSUES:
        issues.append(SpecIssue("<spec>", f"... and {error.error_count() - MAX_ISSUES} more problems not listed", None,
                                "fix the ones above, then validate again"))
    return issues


def _relevant(errors: list[Any]) -> list[tuple[Any, tuple[str, ...]]]:
    """Each pydantic error with its field path (union and validator steps dropped), less the noise of a union: where
    a field also has another error, its literal error for a mapping or list input (`'auto' | {range}` given a
    range) says nothing the other does not."""
    located = []
    for err in errors:
        loc = tuple(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "literal[")))
        located.append((err, tuple(p for p in loc if p not in ("int", "str", "float", "bool", "list[str]",
                                                                 "dict[str,str]", "[key]"))))
    counts: dict[tuple[str, ...], int] = {}
    for _, loc in located:
        counts[loc] = counts.get(loc, 0) + 1
    return [(err, loc) for err, loc in located
            if not (err["type"] == "literal_error" and counts[loc] > 1 and isinstance(err.get("input"), (dict, list)))]


def _named_field(msg: str, loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    """The field a model-level message names first (`train.validation applies to ...` raised on `train`), when the
    spec's YAML has it under `loc`; else `loc`. So the issue points at the line of the field to change."""
    first = msg.split(" ", 1)[0].rstrip(":,;")
    parts = tuple(first.split("."))
    if len(parts) < 2 or not all(p.replace("_", "").isalnum() for p in parts):
        return loc
    for candidate in ((*loc[:-1], *parts) if loc and parts[0] == loc[-1] else (), (*loc, *parts)):
        if candidate and candidate in lines:
            return candidate
    return loc


def _text_problem(text: str) -> str | None:
    """Why a string cannot travel to a job (process environment, JSON file, command line), or None."""
    if "\x00" in text:
        return "holds a NUL byte (\\0), which no environment variable, path or command can carry"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate escape (e.g. \\ud800), which is not text"
    return None


def text_issues(data: Any, lines: dict[tuple[str, ...], int], overridden: dict[tuple[str, ...], str]) -> list[SpecIssue]:
    """Every key and string value in `data` that `_text_problem` refuses (bounded: MAX_ISSUES, nesting MAX_DEPTH)."""
    issues: list[SpecIssue] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack and len(issues) < MAX_ISSUES:
        path, value = stack.pop()
        if id(value) in seen or len(path) > MAX_DEPTH:
            continue
        seen.add(id(value))
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        values = list(value.values()) if isinstance(value, dict) else value
        plain_values = _joined(values)  # None: not all text, so some may be containers
        if _text_problem(_joined(keys) or "") or plain_values is None or _text_problem(plain_values):
            for key, item in reversed(list(zip(keys, values))):
                child = (*path, str(key))
                for what, text in (("key", key), ("value", item)):
                    problem = _text_problem(text) if isinstance(text, str) else None
                    if problem:
                        issues.append(_issue_at(child, f"the {what} {problem}", "remove it", lines, overridden))
                if isinstance(item, (dict, list)):
                    stack.append((child, item))
    return issues


def _joined(items: list[Any]) -> str | None:
    """All of `items` joined, when they are all strings (one C-speed pass); else None."""
    try:
        return "".join(items)
    except TypeError:
        return None


def _issue_at(loc: tuple[str, ...], message: str, hint: str, lines: dict[tuple[str, ...], int],
              overridden: dict[tuple[str, ...], str]) -> SpecIssue:
    """An issue at field path `loc`, named by its YAML line, or by its `--set` flag when one set it."""
    override = longest_prefix(loc, overridden)
    if override is not None:
        return SpecIssue(field_path(loc), f"{message} (from --set {override.partition('=')[0]}=...)", None, hint)
    return SpecIssue(field_path(loc), message, longest_prefix(loc, lines), hint)


_TYPE_HINTS = {
    "int": "give a whole number, e.g. 2",
    "float": "give a number, e.g. 0.0005",
    "bool": "use true or false",
    "string": "give a text value (quote it in YAML)",
    "dict": "give a mapping of `key: value` entries",
    "list": "give a list, e.g. [a, b]",
}


_BOUND_HINTS = {  # pydantic's error type -> (its ctx key, the fix)
    "greater_than_equal": ("ge", "give {} or more"),
    "greater_than": ("gt", "give more than {}"),
    "less_than_equal": ("le", "give {} or less"),
    "less_than": ("lt", "give less than {}"),
    "too_short": ("min_length", "give at least {} item(s)"),
    "too_long": ("max_length", "give at most {} item(s)"),
}


MAX_ISSUES = 50
"""At most this many problems are listed per spec; a count of the rest follows."""


def overridden_keys(overrides: list[str] | None) -> dict[tuple[str, ...], str]:
    return {tuple(item.partition("=")[0].strip().split(".")): item for item in overrides or []}

