"""Job naming: the spec's name plus the per-launch suffix, checked against a cloud's rule (each plugin states its
own, e.g. `cloudtune_aws.request.SAGEMAKER_JOB`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudtune.errors import UnsupportedSpec


@dataclass(frozen=True)
class NameRule:
    """A cloud's rule for the name it is given: `max_len` characters matching `pattern` in full."""

    service: str
    what: str
    max_len: int
    pattern: str
    description: str

    def check(self, name: str, suffix: str) -> str:
        """`name-suffix` when it fits the rule; UnsupportedSpec naming the rule and the fix otherwise."""
        full = f"{name}-{suffix}"
        if len(full) > self.max_len or not re.fullmatch(self.pattern, full):
            room = self.max_len - len(suffix) - 1
            raise UnsupportedSpec(
                f"job name {full!r} does not fit {self.service}'s {self.what} ({self.description})",
                fix=f"shorten `name` to at most {room} characters so that name + the {len(suffix)}-character suffix fit",
            )
        return full

