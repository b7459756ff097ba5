"""Loading job.yaml safely: one parse, linear time and memory, hard limits, line numbers, exact env values.

Contract: `load_yaml(text, source)` parses the document once (libyaml's event parser when PyYAML has it) and
returns the constructed value, a line index (key path -> 1-based line) and the node tree; or raises `SpecError`
naming the line and the limit passed. The composer is iterative and counts every value, each alias use counting
as the values it repeats, so recursive aliases, alias bombs ("billion laughs"), deep nesting and oversized
documents are refused before anything expands them. Work is linear in the document's size.

YAML 1.1 changes some plain (unquoted) scalars on the way in: `0600` is octal 384, `1:30` is 90, `yes` is
true, `1.10` is 1.1. `ambiguous_numbers` finds the number forms nobody means (octal, base 60) anywhere in the
document; `inexact_env` finds env keys and values whose text would not reach the job as written.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from cloudtune.errors import SpecError, SpecIssue

MAX_BYTES = 2 * 1024 * 1024
"""Largest job.yaml read: 2 MiB (a spec with 100,000 env keys is about 1.6 MB; the examples are under 1 KB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists (the spec itself needs 5)."""
MAX_VALUES = 250_000
"""Most values (scalars, mappings, lists) in the expanded document; each alias use counts as the values it repeats."""

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, TIMESTAMP, MERGE = (_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp", "merge"))
_ALLOWED_TAGS = {STR, INT, FLOAT, BOOL, NULL, _TAG + "map", _TAG + "seq", "!"}
_OCTAL = re.compile(r"[-+]?0[0-7_]+")
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")


def _loader_class() -> type:
    """libyaml's parser when PyYAML was built with it (about 10x faster), else the pure-Python one."""
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class LoadedYaml:
    """A parsed document: its value, where each key path starts, and the node tree (None for an empty file)."""

    data: Any
    lines: dict[tuple[str, ...], int]
    root: Node | None


@dataclass(slots=True)
class _Frame:
    node: MappingNode | SequenceNode
    path: tuple[str, ...]
    is_map: bool
    key: Node | None = None
    weight: int = 1
    seen: dict[str, ScalarNode] = field(default_factory=dict)


class _Composer:
    """Builds the node tree from parser events without recursion, enforcing the limits as it goes.

    `weight[id(node)]` is the number of values a node expands to (1 for a scalar); an alias adds its anchor's
    weight to the running total, which is what bounds alias bombs."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.resolver = Resolver()
        self.anchors: dict[str, Node] = {}
        self.open: set[int] = set()
        self.weight: dict[int, int] = {}
        self.total = 0
        self.stack: list[_Frame] = []
        self.lines: dict[tuple[str, ...], int] = {}
        self.root: Node | None = None
        self.documents = 0

    def fail(self, message: str, line: int | None, hint: str) -> SpecError:
        return SpecError(self.source, [SpecIssue("<yaml>", message, line, hint)])

    def too_many(self, line: int) -> SpecError:
        return self.fail(f"the document holds more than {MAX_VALUES:,} values (each alias use counts as the values "
                         "it repeats)", line, "a job spec is small: remove the repeated aliases or the generated entries")

    def explicit_tag(self, event: Any, kind: type[Node]) -> str:
        """An explicit tag, when it is a plain-data one; `!` (non-specific) makes a scalar a string."""
        tag = event.tag
        if tag == "!":
            return STR if kind is ScalarNode else self.resolver.resolve(kind, None, True)
        if tag not in _ALLOWED_TAGS:
            shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
            raise self.fail(f"the tag {shown} is not supported in a job spec", event.start_mark.line + 1,
                            "remove the tag; quote the value if it must stay text")
        return tag

    def run(self, loader: Any) -> Node | None:
        """Consume the loader's events. A scalar is most of the work, so its case is written out inline: resolve the
        tag, count it, and attach it (as a key, a mapping value or a list item) without further calls."""
        implicit_resolvers = self.resolver.yaml_implicit_resolvers
        stack = self.stack
        lines = self.lines
        get_event = loader.get_event
        while True:
            event = get_event()
            kind = type(event)
            if kind is ScalarEvent:
                self.total += 1
                if self.total > MAX_VALUES:
                    raise self.too_many(event.start_mark.line + 1)
                value = event.value
                if event.tag is not None:
                    tag = self.explicit_tag(event, ScalarNode)
                elif event.implicit[0]:
                    tag = STR
                    for tag_candidate, regexp in implicit_resolvers.get(value[0] if value else "", ()):
                        if regexp.match(value):
                            tag = tag_candidate
                            break
                else:
                    tag = STR
                node: Node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
                if event.anchor is not None:
                    self.anchors[event.anchor] = node
                    self.weight[id(node)] = 1
                if not stack:
                    self.root = node
                    continue
                frame = stack[-1]
                frame.weight += 1
                if not frame.is_map:
                    lines.setdefault((*frame.path, str(len(frame.node.value))), event.start_mark.line + 1)
                    frame.node.value.append(node)
                    continue
                key = frame.key
                if key is None:
                    frame.key = node
                    continue
                frame.key = None
                if type(key) is ScalarNode:
                    self.check_duplicate(frame, key)
                    lines.setdefault((*frame.path, key.value), key.start_mark.line + 1)
                frame.node.value.append((key, node))
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.start_collection(event)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                node = frame.node
                node.end_mark = event.end_mark
                self.open.discard(id(node))
                self.weight[id(node)] = frame.weight
                if stack:
                    self.attach(stack[-1], node, frame.weight, node.start_mark.line + 1)
                else:
                    self.root = node
            elif kind is AliasEvent:
                self.alias(event)
            elif kind is DocumentStartEvent:
                self.documents += 1
                if self.documents > 1:
                    raise self.fail("the file holds more than one YAML document", event.start_mark.line + 1,
                                    "keep one job per file: remove the `---` line and what follows")
            elif event is None or kind is StreamEndEvent:
                return self.root

    def start_collection(self, event: Any) -> None:
        line = event.start_mark.line + 1
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels", line,
                            "a job spec nests a few levels: check the brackets and indentation")
        self.total += 1
        if self.total > MAX_VALUES:
            raise self.too_many(line)
        cls: type[MappingNode] | type[SequenceNode] = MappingNode if type(event) is MappingStartEvent else SequenceNode
        tag = self.resolver.resolve(cls, None, True) if event.tag is None else self.explicit_tag(event, cls)
        node = cls(tag, [], event.start_mark, None, event.flow_style)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        self.open.add(id(node))
        self.stack.append(_Frame(node, self.child_path(), cls is MappingNode))

    def alias(self, event: Any) -> None:
        line = event.start_mark.line + 1
        node = self.anchors.get(event.anchor)
        if node is None:
            raise self.fail(f"alias *{event.anchor} refers to no anchor defined before it", line,
                            f"define &{event.anchor} earlier in the file, or remove the alias")
        if id(node) in self.open:
            raise self.fail(f"alias *{event.anchor} refers to a value that contains it (a recursive alias)", line,
                            "an alias cannot repeat the mapping or list it sits in: write the value out")
        weight = self.weight[id(node)]
        self.total += weight
        if self.total > MAX_VALUES:
            raise self.too_many(line)
        if self.stack:
            self.attach(self.stack[-1], node, weight, line)
        else:
            self.root = node

    def child_path(self) -> tuple[str, ...]:
        """The key path of the collection about to open inside the innermost open one."""
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if not frame.is_map:
            return (*frame.path, str(len(frame.node.value)))
        if frame.key is None:
            return (*frame.path, "<key>")
        return (*frame.path, _key_text(frame.key))

    def attach(self, frame: _Frame, node: Node, weight: int, line: int) -> None:
        """Add a finished node (or an alias to one) to the open collection `frame`."""
        frame.weight += weight
        if not frame.is_map:
            self.lines.setdefault((*frame.path, str(len(frame.node.value))), line)
            frame.node.value.append(node)
            return
        key = frame.key
        if key is None:
            frame.key = node
            return
        frame.key = None
        if type(key) is ScalarNode:
            self.check_duplicate(frame, key)
            self.lines.setdefault((*frame.path, key.value), key.start_mark.line + 1)
        frame.node.value.append((key, node))

    def check_duplicate(self, frame: _Frame, key: ScalarNode) -> None:
        """Refuse a key written twice in one mapping: YAML would silently keep the last value."""
        seen = frame.seen
        first = seen.get(key.value)
        if first is None or key.tag == MERGE:
            seen[key.value] = key
            return
        if first.tag != key.tag:  # 1 and "1" are two keys
            return
        first, line = first.start_mark.line + 1, key.start_mark.line + 1
        where = ".".join(part if part.isprintable() else repr(part) for part in (*frame.path, key.value))
        raise self.fail(f"{where}: the key {key.value!r} appears twice (lines {first} and {line}); YAML would keep "
                        "only the last", line, "keep one of them")


def _key_text(key: Node) -> str:
    return str(key.value) if isinstance(key, ScalarNode) else "<key>"


class YamlSyntaxError(SpecError):
    """The text is not valid YAML (as opposed to valid YAML past a limit)."""


def _yaml_error(source: str, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return YamlSyntaxError(source, [SpecIssue("<yaml>", f"not valid YAML: {problem}", mark.line + 1 if mark else None,
                                        "fix the indentation or quoting on that line")])


def compose(text: str, source: str, loader: type | None = None) -> tuple[Node | None, dict[tuple[str, ...], int]]:
    """Parse `text` once into a node tree and its line index, or raise SpecError (invalid YAML or a limit passed).

    `loader` is the PyYAML loader class whose parser makes the events (default: libyaml's when available)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate: from a --set value or the API, never from a file read as UTF-8
        raise SpecError(source, [SpecIssue("<yaml>", f"character {exc.start + 1} is a lone surrogate escape "
                                           f"({text[exc.start]!r}), which is not text", None,
                                           "give the value as UTF-8 text")]) from None
    if size > MAX_BYTES:
        raise SpecError(source, [SpecIssue("<file>", f"the file is {size:,} bytes; a job spec may be at most {MAX_BYTES:,}",
                                           None, "a job spec is small: keep data and long values in files it names")])
    composer = _Composer(source)
    loader = (loader or _loader_class())(text)
    try:
        root = composer.run(loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()
    return root, composer.lines


def construct(root: Node | None, source: str) -> Any:
    """The Python value of a composed (and therefore bounded) node tree, as PyYAML's safe loader builds it; None for
    an empty document. A node reached twice (an alias) gives the same object both times."""
    if root is None:
        return None
    safe = SafeConstructor()
    memo: dict[int, Any] = {}
    scalars: dict[tuple[str, str], Any] = {}  # immutable values by (tag, text): `[1, 1, 1, ...]` builds 1 once

    def build(node: Node, path: tuple[str, ...] = ()) -> Any:
        if id(node) in memo:
            return memo[id(node)]
        if type(node) is ScalarNode:
            if node.tag == STR:
                return node.value
            key = (node.tag, node.value)
            if key not in scalars:
                scalars[key] = _scalar(safe, node, path, source)
            return scalars[key]
        if isinstance(node, SequenceNode):
            items: list[Any] = []
            memo[id(node)] = items
            items.extend(build(child, (*path, str(i))) for i, child in enumerate(node.value))
            return items
        if any(k.tag == MERGE for k, _ in node.value):
            safe.flatten_mapping(node)  # merged pairs first, so the mapping's own keys win
        mapping: dict[Any, Any] = {}
        memo[id(node)] = mapping
        for key_node, value_node in node.value:
            key = build(key_node)
            if not isinstance(key, (str, int, float, bool, type(None))) and not _hashable(key):
                raise SpecError(source, [SpecIssue("<yaml>", "a key must be a plain value, not a list or mapping",
                                                   key_node.start_mark.line + 1, "write the key as text")])
            mapping[key] = build(value_node, (*path, _key_text(key_node)))
        return mapping

    try:
        return build(root)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except RecursionError:  # nesting is bounded by MAX_DEPTH and merges by MAX_VALUES; this is a last guard
        raise SpecError(source, [SpecIssue("<yaml>", "the merge keys (<<) nest too deeply", None,
                                           "write the merged values out")]) from None


def too_many_digits(what: str, digits: int) -> tuple[str, str]:
    """(message, fix) for an integer longer than Python converts from text (sys.get_int_max_str_digits(), 4,300
    by default: CPython's guard against quadratic-time conversion, CVE-2020-10735)."""
    import sys

    return (f"the {what} has {digits:,} digits; numbers longer than {sys.get_int_max_str_digits():,} digits are "
            "refused", "give a number of a sensible size, or quote it if it is text")


def _scalar(safe: SafeConstructor, node: ScalarNode, path: tuple[str, ...], source: str) -> Any:
    """One non-text scalar's value; an integer too long to convert is one SpecIssue naming its key path and line."""
    try:
        return safe.construct_object(node)
    except ValueError:
        if node.tag != INT:
            raise
        message, fix = too_many_digits("integer", sum(c.isdigit() for c in node.value))
        raise SpecError(source, [SpecIssue(".".join(path) or "<value>", message, node.start_mark.line + 1, fix)]) from None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def load_yaml(text: str, source: str, loader: type | None = None) -> LoadedYaml:
    """Parse, check and construct a document: see the module's contract (`loader` as for `compose`)."""
    with gc_paused():
        root, lines = compose(text, source, loader)
        return LoadedYaml(construct(root, source), lines, root)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building many small acyclic objects otherwise triggers repeated full
    collections (half the time on a large document). What a spec builds is bounded by MAX_VALUES; the few cycles
    (a caught exception's traceback) are collected once the collector runs again. Nests."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ------------------------------------------------------------------------------------------------ exactness
def _scalar_value(node: ScalarNode) -> Any:
    return SafeConstructor().construct_object(node)


def _plain(node: ScalarNode) -> bool:
    """Written without quotes (libyaml reports the plain style as '', the pure-Python parser as None)."""
    return not node.style


def as_env_text(value: Any) -> str:
    """The text an env value reaches the job as (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _mapping_pairs(node: MappingNode, depth: int = 0) -> Iterator[tuple[Node, Node]]:
    """A mapping's (key, value) node pairs, following merge keys (`<<: *base`) into the mappings they merge."""
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.tag == MERGE and depth < MAX_DEPTH:
            for merged in (value.value if isinstance(value, SequenceNode) else [value]):
                if isinstance(merged, MappingNode):
                    yield from _mapping_pairs(merged, depth + 1)
        else:
            yield key, value


def _lookup(root: Node | None, path: tuple[str, ...]) -> Node | None:
    node = root
    for part in path:
        if not isinstance(node, MappingNode):
            return None
        node = next((v for k, v in _mapping_pairs(node) if isinstance(k, ScalarNode) and k.value == part), None)
    return node


def inexact_env(root: Node | None, field_name: str = "env") -> list[SpecIssue]:
    """Env keys and values written unquoted that YAML would change (012 -> 10, 1.10 -> 1.1, yes -> true, ~ -> null).

    A plain scalar passes when the text the job would see equals the text in the file (`8`, `true`, `hello`)."""
    node = _lookup(root, (field_name,))
    if not isinstance(node, MappingNode):
        return []
    issues = []
    for key, value in _mapping_pairs(node):
        for part, what in ((key, "name"), (value, "value")):
            if part.tag == STR or type(part) is not ScalarNode or not _plain(part):  # most values: text as written
                continue
            name = f"{field_name}.{key.value if isinstance(key, ScalarNode) else '?'}"
            line = part.start_mark.line + 1
            if part.tag == NULL:
                issues.append(SpecIssue(name, f"the {what} is empty (YAML null)", line,
                                        f'write {key.value}: "" for an empty value, or remove the entry'))
                continue
            text = as_env_text(_scalar_value(part))
            if text != part.value:
                issues.append(SpecIssue(name, f"YAML reads the unquoted {what} {part.value} as {text}, so the job would "
                                              f"see {text!r}", line, f'quote it: "{part.value}"'))
    return issues


def ambiguous_numbers(root: Node | None, skip: tuple[str, ...] = ("env",)) -> list[SpecIssue]:
    """Unquoted numbers that YAML 1.1 reads in a base nobody means: `0600` (octal, 384) and `1:30` (base 60, 90).

    Walks each node once (aliases are not followed again); top-level keys in `skip` are left to their own checks."""
    if root is None:
        return []
    prefix: tuple[str, ...] = ()
    issues: list[SpecIssue] = []
    seen: set[int] = set()
    stack: list[tuple[Node, tuple[str, ...]]] = [(root, prefix)]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            if _plain(node) and node.tag in (INT, FLOAT):
                reading = _ambiguous(node)
                if reading:
                    issues.append(SpecIssue(".".join(path) or "<value>", f"YAML reads {node.value} as {reading}",
                                            node.start_mark.line + 1, f'write the number without a leading 0 or ":", '
                                            f'or quote it ("{node.value}") if it is text'))
        elif isinstance(node, MappingNode):
            stack.extend((v, (*path, _key_text(k))) for k, v in node.value
                         if _may_hold_numbers(v) and (path or _key_text(k) not in skip))
        elif isinstance(node, SequenceNode):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(node.value) if _may_hold_numbers(v))
    return sorted(issues, key=lambda i: i.line or 0)


def _may_hold_numbers(node: Node) -> bool:
    """A collection, or a plain scalar read as a number that starts with a sign or 0 or holds a ':' (the only forms
    `_ambiguous` can refuse); text values, most of a document, need no further look."""
    if type(node) is not ScalarNode:
        return True
    return (node.tag == INT or node.tag == FLOAT) and not node.style and (node.value[:1] in ("0", "+", "-")
                                                                          or ":" in node.value)


def _ambiguous(node: ScalarNode) -> str | None:
    """How YAML 1.1 misreads this plain number, or None: a leading-0 octal whose value differs from the decimal
    digits (010 is 8; 00 and 07 are harmless), or a base-60 number (1:30 is 90)."""
    if node.tag == INT and _OCTAL.fullmatch(node.value):
        value = _scalar_value(node)
        return None if value == int(node.value.replace("_", ""), 10) else f"the octal number {value}"
    if _BASE60.fullmatch(node.value):
        return f"the base-60 number {_scalar_value(node)}"
    return None
