"""`python -m cloudtune.runtime.torchrun ARGS`: torchrun (`torch.distributed.run`, same arguments), without the
traceback and failure table it prints when a worker fails, and with the node's exit code of the FIRST failure.

The workers have already said why they failed (a job input error as one line, any other error with its own
traceback) and written the failure file; torchrun's `ChildFailedError` traceback would bury that line under forty
lines that repeat it. Here it becomes one line naming the rank that failed first and why, and the exit code of that
rank's class (cloudtune.runtime.exitcodes), not torchrun's 1 whatever the workers did.

The cause of a multi-process failure is the first rank that failed; what the others did after it is consequence:
once a rank is gone, the others fail in their next collective (a lost peer: class `infrastructure`) or are stopped
by torchrun's agent (SIGTERM). torchrun records failures in the order it saw them (its agent polls the workers,
then stops the rest and records them too), so the cause is the first failure in that order that is not a
consequence. A rank killed by a signal the agent did not send (the OOM killer, a crash, `kill -9`) writes no
failure file; its line is written to the node's failure file (`CLOUDTUNE_FAILURE_FILE`) in place of the
consequence another rank wrote there.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cloudtune.runtime import exitcodes
from cloudtune.runtime.exitcodes import ExitClass
from cloudtune.runtime.streams import whole_lines

FAILURE_FILE_VAR = "CLOUDTUNE_FAILURE_FILE"  # the node's failure file (SageMaker's contract), set by cloudtune-run
STOP_CODES = frozenset({-int(signal.SIGTERM), exitcodes.EXIT_PREEMPTED})  # how a rank stopped by the agent ends


@dataclass(frozen=True)
class RankExit:
    """One failed worker as torchrun saw it: global rank, exit code (negative: killed by that signal), pid."""

    rank: int
    code: int
    pid: int = 0

    @property
    def consequence(self) -> bool:
        """Whether this is how a rank ends after another rank failed: a lost peer, or the agent's SIGTERM."""
        return self.code in STOP_CODES or exitcodes.classify(self.code) is ExitClass.INFRASTRUCTURE

    def describe(self) -> str:
        if self.code < 0:
            try:
                return f"rank {self.rank} was killed by {signal.Signals(-self.code).name}"
            except ValueError:
                return f"rank {self.rank} was killed by signal {-self.code}"
        return f"rank {self.rank} exited {self.code} ({exitcodes.classify(self.code).value})"


def first_failure(failures: list[RankExit]) -> RankExit:
    """The failure that explains the others: the first, in the order torchrun saw them, that is not a consequence
    (a lost peer, a stop); the first of all when every one is. `failures` must not be empty."""
    return next((f for f in failures if not f.consequence), failures[0])


def node_code(cause: RankExit) -> int:
    """The node's exit code: that of the cause's class (a rank killed by a signal: preempted, retried)."""
    return exitcodes.code_of(exitcodes.classify(cause.code))


def report(failures: list[RankExit], environ: Mapping[str, str] | None = None) -> int:
    """Print the one line that names the first failure and the rest as its consequence; write it to the node's
    failure file when the cause wrote none (a rank killed by a signal). Returns the node's exit code."""
    env = os.environ if environ is None else environ
    cause = first_failure(failures)
    after = "".join(f"; then {f.describe()}" + (" (a consequence)" if f.consequence else "")
                    for f in failures if f is not cause)
    code = node_code(cause)
    print(f"[cloudtune] torchrun: first failure: {cause.describe()}{after}", flush=True)
    failure_file = env.get(FAILURE_FILE_VAR)
    if cause.code < 0 and failure_file:
        line = f"AlgorithmError: {cause.describe()} (pid {cause.pid}), the first rank to fail{after}"
        tag = " " + exitcodes.describe(exitcodes.classify(code))
        try:
            Path(failure_file).parent.mkdir(parents=True, exist_ok=True)
            Path(failure_file).write_text(line[:1024 - len(tag)] + tag)
        except OSError as exc:
            print(f"[cloudtune] torchrun: could not write the failure file {failure_file}: {exc}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with `argv` (default: this process's arguments); the exit code of the first failed worker's
    class when a worker failed, else 0; the infrastructure exit code when torchrun itself cannot rendezvous or
    reach its store (see exitcodes)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    whole_lines()  # the agent writes to the output its workers share
    try:
        torchrun_main(argv if argv is not None else sys.argv[1:])
    except ChildFailedError as exc:
        # exc.failures keeps torchrun's insertion order: the order in which its agent saw the workers end
        failures = [RankExit(int(rank), int(f.exitcode), int(f.pid)) for rank, f in exc.failures.items()]
        return report(failures) if failures else exitcodes.EXIT_ERROR
    except Exception as exc:  # the agent's own rendezvous or store failed: a fresh start may cure it
        if exitcodes.exception_class(exc) is not ExitClass.INFRASTRUCTURE:
            raise
        print(f"[cloudtune] torchrun: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
        return exitcodes.EXIT_INFRASTRUCTURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
