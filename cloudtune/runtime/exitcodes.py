"""Exit classes: what a job's failure means for a retry. The one table of values and names.

`cloudtune-run` exits with the code of its class; the local supervisor reads the code back and retries only
the classes whose `retried` is true; cloud launchers map the same table to their services' retry rules.
Retrying is for failures that a fresh start can cure (a node taken away, a network or host fault). A failure
that would repeat (bad data, a bad option, a diverged run, a bug) is never re-run: a retry costs paid hours.

| class            | code | retried | raised by                                                             |
|------------------|------|---------|-----------------------------------------------------------------------|
| `input`          | 65   | no      | JobInputError (data, model, options), an incomplete container contract |
| `diverged`       | 66   | no      | a run whose loss is no longer finite                                   |
| `infrastructure` | 75   | yes     | rendezvous, store and collective-communication failures (a lost peer)  |
| `preempted`      | 143  | yes     | SIGTERM (the recipe checkpoints, then exits 143); a node, or the rank that failed first, killed by a signal |
| `error`          | any other non-zero code | no | an uncaught exception, a command's own failure           |

A multi-process failure has the class of its first failure (cloudtune.runtime.torchrun): the lost-peer errors
and stops of the ranks that fail after it are its consequence, never its cause.

Unknown non-zero exits (`error`) are not retried: most are bugs or bad inputs that fail again the same way,
and SageMaker's RetryStrategy, too, retries only its own internal errors, never an AlgorithmError. A `command`
job can ask for a retry by exiting 75 (sysexits' EX_TEMPFAIL, "try again later"), or mark its input as bad by
exiting 65 (EX_DATAERR).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class ExitClass(str, Enum):
    SUCCEEDED = "succeeded"
    INPUT = "input"
    DIVERGED = "diverged"
    INFRASTRUCTURE = "infrastructure"
    PREEMPTED = "preempted"
    ERROR = "error"


@dataclass(frozen=True)
class ClassInfo:
    code: int
    retried: bool
    meaning: str


CLASSES: dict[ExitClass, ClassInfo] = {
    ExitClass.SUCCEEDED: ClassInfo(0, False, "the job succeeded"),
    ExitClass.INPUT: ClassInfo(65, False, "the job's data, model or options cannot be used as given; it would fail again"),
    ExitClass.DIVERGED: ClassInfo(66, False, "the training run diverged; it would diverge again"),
    ExitClass.INFRASTRUCTURE: ClassInfo(75, True, "a host, network or rendezvous failure; a fresh start may cure it"),
    ExitClass.PREEMPTED: ClassInfo(128 + signal.SIGTERM, True, "a node was stopped or lost; the job resumes from its newest checkpoint"),
    ExitClass.ERROR: ClassInfo(1, False, "the job's code failed; a retry would most likely fail the same way"),
}

EXIT_INPUT = CLASSES[ExitClass.INPUT].code
EXIT_DIVERGED = CLASSES[ExitClass.DIVERGED].code
EXIT_INFRASTRUCTURE = CLASSES[ExitClass.INFRASTRUCTURE].code
EXIT_PREEMPTED = CLASSES[ExitClass.PREEMPTED].code
EXIT_ERROR = CLASSES[ExitClass.ERROR].code

# exception type names (from torch.distributed and its elastic agent) that mean the cluster, not the job, failed
INFRASTRUCTURE_ERRORS = frozenset({
    "DistNetworkError", "DistStoreError", "DistBackendError",
    "RendezvousError", "RendezvousClosedError", "RendezvousTimeoutError", "RendezvousConnectionError",
    "RendezvousStateError",
})

# what a collective op raises (as a plain RuntimeError) when a peer is gone: gloo's transport ("Connection closed by
# peer", "Connection reset by peer"; torch/csrc/distributed/c10d/ProcessGroupGloo.cpp, gloo/transport/tcp/pair.cc)
# and NCCL's result codes (ncclRemoteError, ncclSystemError; torch/csrc/distributed/c10d/NCCLUtils.hpp)
COLLECTIVE_MESSAGE = re.compile(
    r"\bgloo\b.*(?:Connection (?:closed|reset) by peer|Broken pipe|Timed out)"
    r"|\bNCCL (?:error|communicator was aborted)|\bnccl(?:RemoteError|SystemError)\b",
    re.IGNORECASE | re.DOTALL)

# when workers of one node fail in different ways, the class the node reports: a failure that repeats first, then
# a stop from outside; a collective failure last, as it is what the other ranks see once one rank is gone
PRECEDENCE = (ExitClass.INPUT, ExitClass.DIVERGED, ExitClass.ERROR, ExitClass.PREEMPTED, ExitClass.INFRASTRUCTURE)


def classify(code: int) -> ExitClass:
    """The class of a process' exit status as `subprocess` reports it (negative: killed by that signal).

    A process killed by any signal counts as preempted: it was stopped from outside, as a cloud stops a node."""
    if code == 0:
        return ExitClass.SUCCEEDED
    if code < 0:
        return ExitClass.PREEMPTED
    for cls, info in CLASSES.items():
        if info.code == code and cls is not ExitClass.ERROR:
            return cls
    return ExitClass.ERROR


def code_of(cls: ExitClass) -> int:
    return CLASSES[cls].code


def retried(cls: ExitClass) -> bool:
    return CLASSES[cls].retried


def exception_class(exc: BaseException) -> ExitClass:
    """The class of an uncaught exception: the exception's own `exit_class` attribute when it has one (an ExitClass
    or its value), infrastructure for cluster failures (by type name, across the MRO, or a RuntimeError whose
    message is a collective op's lost peer: COLLECTIVE_MESSAGE), else error."""
    own = getattr(exc, "exit_class", None)
    if own is not None:
        return ExitClass(own)
    names = {t.__name__ for t in type(exc).__mro__}
    if names & INFRASTRUCTURE_ERRORS:
        return ExitClass.INFRASTRUCTURE
    if isinstance(exc, RuntimeError) and COLLECTIVE_MESSAGE.search(str(exc)[:4096]):
        return ExitClass.INFRASTRUCTURE
    return ExitClass.ERROR


def worst(classes: list[ExitClass]) -> ExitClass:
    """The class that explains a set of failures, by PRECEDENCE (a repeating failure beats a transient one)."""
    for cls in PRECEDENCE:
        if cls in classes:
            return cls
    return ExitClass.SUCCEEDED


def describe(cls: ExitClass) -> str:
    """The tag the job's failure reason carries, e.g. `[exit class: input, not retried]` or `[exit class: preempted,
    retryable]`: the class's rule, not what happened (a retryable failure is retried only while the job's `retries`
    last; the container cannot know how many remain)."""
    return f"[exit class: {cls.value}, {'retryable' if retried(cls) else 'not retried'}]"


def record_failure(failure_file: Path | None, message: str, code: int) -> None:
    """Write the failure reason, tagged with its exit class, where the cloud shows it (SageMaker's failure file,
    `RuntimeContext.failure_file`; None: nowhere).

    The first reason written stays: the worker that failed first says why, not the `exit code 1` of its launcher."""
    if failure_file is None or failure_file.exists():
        return
    tag = " " + describe(classify(code))
    failure_file.parent.mkdir(parents=True, exist_ok=True)
    failure_file.write_text(message[:1024 - len(tag)] + tag)
