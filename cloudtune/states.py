"""cloudtune's job states: one enum for every provider, and the one definition of which states are terminal.

Records carry the enum (`cloudtune.store.JobRecord.state`, `cloudtune.launcher.JobStatus.state`). It is a `str`
enum that prints, formats and serializes (JSON, SQLite) as its value, so a stored or printed state reads
`succeeded`, never `JobState.SUCCEEDED`. Each cloud's table from its native states onto these lives with the cloud
(`cloudtune.kit.states`). Standard library only.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    """A job's state; the provider's own state name is kept beside it (`JobStatus.native`) for display."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    # the value, as text (Python 3.10's `str, Enum` prints the member's name otherwise)
    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def terminal(self) -> bool:
        """Whether a job in this state has ended (it never leaves it)."""
        return self in TERMINAL


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""The final states: the one definition (a state string such as "failed" is found in it too)."""

ACTIVE: frozenset[JobState] = frozenset({JobState.PENDING, JobState.RUNNING})
"""The states of a job that has not ended."""


def is_terminal(state: str | JobState) -> bool:
    """Whether `state` (a JobState or its value) is terminal; ValueError for a name that is no state."""
    return JobState(state) in TERMINAL
