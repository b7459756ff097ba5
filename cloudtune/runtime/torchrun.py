"""`python -m cloudtune.runtime.torchrun ARGS`: torchrun (`torch.distributed.run`, same arguments), without the
traceback and failure table it prints when a worker fails.

The workers have already said why they failed (a job input error as one line, any other error with its own
traceback) and written the failure file; torchrun's `ChildFailedError` traceback would bury that line under forty
lines that repeat it. Here it becomes one line with the failed ranks and their exit codes, and exit status 1, which
is what torchrun itself exits with.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with `argv` (default: this process's arguments); 1 when a worker failed, else 0; the
    infrastructure exit code when torchrun itself cannot rendezvous or reach its store (see exitcodes)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    from cloudtune.runtime import exitcodes

    try:
        torchrun_main(argv if argv is not None else sys.argv[1:])
    except ChildFailedError as exc:
        failed = ", ".join(f"rank {rank} exit {failure.exitcode}" for rank, failure in sorted(exc.failures.items()))
        print(f"[cloudtune] torchrun: worker(s) failed: {failed}", flush=True)
        return 1
    except Exception as exc:  # the agent's own rendezvous or store failed: a fresh start may cure it
        if exitcodes.exception_class(exc) is not exitcodes.ExitClass.INFRASTRUCTURE:
            raise
        print(f"[cloudtune] torchrun: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
        return exitcodes.EXIT_INFRASTRUCTURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
