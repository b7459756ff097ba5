"""The spec's shared pieces: the strict model base, the name rules, and how an error quotes a value.

Standard library and pydantic only: every other spec module builds on these.
"""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
NAME_RULES: dict[str, tuple[str, str]] = {
    "job": (NAME_PATTERN.strip("^$"), "use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. my-job-1"),
    "input": (r"[A-Za-z][A-Za-z0-9_-]{0,63}", "use 1-64 letters, digits, '_' or '-', starting with a letter, e.g. train"),
    "environment variable": (r"[A-Za-z_][A-Za-z0-9_]{0,254}", "use letters, digits and '_' (at most 255), not starting with a digit, e.g. HF_HOME"),
    "secret": (r"[A-Za-z_][A-Za-z0-9_]{0,254}", "use letters, digits and '_' (at most 255), not starting with a digit, e.g. HF_TOKEN"),
}


def check_name(kind: str, value: Any) -> str:
    """The one name rule: `value` must be a string matching the whole of its kind's pattern (no trailing newline).

    Returns the name; raises ValueError naming the kind and what a valid name looks like."""
    pattern, usage = NAME_RULES[kind]
    if not isinstance(value, str) or not _compiled(pattern).fullmatch(value):
        raise ValueError(f"{shown(value)} is not a valid {kind} name; {usage}")
    return value


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error quotes it: repr, cut to about `limit` characters."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlong, short.maxlist, short.maxdict, short.maxlevel = limit, limit, limit, 4, 4, 2
    return short.repr(value)


class Strict(BaseModel):
    """Unknown keys are errors; numbers are finite (`.inf` and `.nan` are refused)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class TrainPart(Strict):
    """A train sub-model whose later-added options are left out of dumps while they hold their default.

    Runtime job configs (and golden plans) stay as they were for specs that do not use the new options, and the
    job JSON stays short (SageMaker caps each hyperparameter value at 2500 characters). The container
    re-validates the dump, so an omitted option gets the same default there.
    """

    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()
    _OMIT_WHEN_UNSET: ClassVar[tuple[str, ...]] = ()
    """Options whose being given at all means something (a rule refuses them for some tasks, or leaving one out
    picks the model's own value): left out of dumps unless the spec gave them, so the container's re-validation
    sees the same options as the plan's (`model_fields_set` survives the job JSON)."""

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._OMIT_WHEN_DEFAULT:
                if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    del data[name]
            for name in self._OMIT_WHEN_UNSET:
                if name in data and name not in self.model_fields_set:
                    del data[name]
        return data

