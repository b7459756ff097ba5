"""User-facing errors. The CLI prints these without a traceback and exits 2 (invalid input) or 1."""

from __future__ import annotations

from dataclasses import dataclass


class CloudtuneError(Exception):
    """Base of every error cloudtune raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message + (f"\nTo fix: {self.fix}" if self.fix else "")


class InvalidInput(CloudtuneError):
    """Bad spec, flag, provider name or missing plugin: exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class SpecIssue:
    path: str
    message: str
    line: int | None
    hint: str = ""

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}: " if self.line else f"{source}: "
        return f"{where}{self.path}: {self.message}" + (f"\n    To fix: {self.hint}" if self.hint else "")


class SpecError(InvalidInput):
    """One or more problems in a job spec."""

    SHOWN = 50
    """At most this many issues are rendered; the message ends with how many more there are."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = [i.render(source) for i in issues[: self.SHOWN]]
        if len(issues) > self.SHOWN:
            lines.append(f"... and {len(issues) - self.SHOWN} more; fix the ones above first")
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return f"invalid job spec ({len(self.issues)} problem{'s' if len(self.issues) != 1 else ''}):\n" + self.message


class UnsupportedSpec(InvalidInput):
    """The spec asks for something a launcher cannot do; raised at plan time, before any upload."""


class JobNotFound(InvalidInput):
    pass


class JobFailed(CloudtuneError):
    exit_code = 1


class JobInputError(ValueError):
    """Inside the container: the job's data, model or options cannot be used as given. `cloudtune-run` reports it
    as one clear line (no traceback) and fails the job; the message names the file/field and how to fix it."""
