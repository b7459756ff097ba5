"""Where a validated spec came from, so that a check made later (at plan time, once a provider or the job store is
known) names a field by its YAML line, or by the `--set` flag that gave it, as the loader's own errors do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudtune.errors import SpecError, SpecIssue
from cloudtune.spec.base import shown


def field_path(loc: tuple[str, ...]) -> str:
    """A field path as errors print it: `a.b.c`, with a key holding a newline or other control character quoted."""
    return ".".join(part if part.isprintable() else shown(part) for part in loc) or "<spec>"


def longest_prefix(loc: tuple[str, ...], table: Mapping[tuple[str, ...], Any]) -> Any:
    """The value in `table` for the longest prefix of the field path `loc`, or None."""
    return next((table[loc[:cut]] for cut in range(len(loc), 0, -1) if loc[:cut] in table), None)


@dataclass(frozen=True)
class SpecOrigin:
    """A spec's source (the file name errors start with), the YAML line of each key path (1-based), and the `--set`
    items applied to it (key path -> `KEY=VALUE`).

    Where a spec came from is not part of what it is: any two origins compare equal, so equal specs stay equal."""

    source: str = "<spec>"
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    overridden: Mapping[tuple[str, ...], str] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpecOrigin)

    def __hash__(self) -> int:
        return 0

    def line_of(self, loc: tuple[str, ...]) -> int | None:
        """The YAML line of the field path `loc` (or of its nearest parent written in the file), or None."""
        return longest_prefix(loc, self.lines)

    def issue(self, loc: tuple[str, ...], message: str, hint: str = "") -> SpecIssue:
        """An issue at `loc` as a validation error names it: by its YAML line, or by the whole `--set` item that set it."""
        override = longest_prefix(loc, self.overridden)
        if override is not None:
            return SpecIssue(field_path(loc), f"{message} (from --set {override})", None, hint)
        return SpecIssue(field_path(loc), message, self.line_of(loc), hint)

    def error(self, issues: list[SpecIssue]) -> SpecError:
        """The SpecError (exit 2) listing `issues` under this spec's source."""
        return SpecError(self.source, issues)
