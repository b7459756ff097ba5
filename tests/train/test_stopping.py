"""The stop bound's parts on their own: the watchdog ends a process whose stop path hangs (and leaves its exit code
for torchrun's parent), the parent kills a child that outlives its deadline, and a SIGTERM that arrives while the
ranks compare their stop flags is not lost (issue 19: "a SIGTERM ... was ignored and the run went on to the end")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudtune.runtime import stopping

ROOT = Path(__file__).resolve().parents[2]

HANG = textwrap.dedent("""
    import threading
    from cloudtune.runtime import stopping
    stopping.arm(143, deadline=1)
    print("armed", flush=True)
    threading.Event().wait()  # the stop path hangs (a collective whose peer is gone)
""")


def test_the_watchdog_ends_a_hung_stop_with_143_and_reports_the_worker_exit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           stopping.EXIT_DIR_VAR: str(tmp_path), "RANK": "3"}
    proc = subprocess.run([sys.executable, "-c", HANG], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stdout.splitlines() == ["armed", "[cloudtune] " + stopping.DEADLINE_LINE.format(seconds=1)]
    assert (tmp_path / "rank-3").read_text() == "143"  # what the node's cloudtune-run classifies the workers by


def test_disarm_cancels_the_watchdog_and_the_deadline_is_read_from_the_environment() -> None:
    assert stopping.stop_deadline({}) == stopping.STOP_DEADLINE_S == 100.0
    assert stopping.stop_deadline({stopping.STOP_DEADLINE_VAR: "7.5"}) == 7.5
    assert stopping.stop_deadline({stopping.STOP_DEADLINE_VAR: "x"}) == 100.0
    stopping.arm(143, deadline=3600)
    assert stopping.stop_requested()
    stopping.disarm()
    assert not stopping.stop_requested()


IGNORES_SIGTERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(3600)\n"


def test_the_parent_kills_a_child_that_outlives_its_stop_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtune.runtime.launch import wait_bounded

    monkeypatch.setenv(stopping.STOP_DEADLINE_VAR, "1")
    monkeypatch.setattr(stopping, "STOP_MARGIN_S", 0.0)
    child = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)  # ignored by the child
        code = wait_bounded(child, received=[signal.SIGTERM], poll_s=0.2)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert code == -signal.SIGKILL


def _compare(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from cloudtune.train.callbacks import SigtermCallback

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cb = SigtermCallback()
        signal.signal(signal.SIGTERM, cb.handler)
        original = dist.all_reduce

        def sigterm_mid_compare(*args, **kwargs):  # the signal lands while the flags are being compared
            if rank == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(*args, **kwargs)

        dist.all_reduce = sigterm_mid_compare
        first = cb.agreed("cpu")
        dist.all_reduce = original
        second = cb.agreed("cpu")
        Path(out, f"rank{rank}.json").write_text(json.dumps({"first": first, "second": second,
                                                             "armed": stopping.stop_requested()}))
    finally:
        stopping.disarm()
        dist.destroy_process_group()


def test_a_sigterm_during_the_flag_comparison_is_acted_on_at_the_next_step(tmp_path: Path) -> None:
    mp = pytest.importorskip("torch.multiprocessing")
    pytest.importorskip("transformers")
    mp.spawn(_compare, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # the first comparison read the flag before the signal; the signal is kept for the next one, on every rank,
        # and every rank armed the stop deadline
        assert got == {"first": False, "second": True, "armed": True}, (rank, got)


def test_the_first_worker_to_fail_alike_says_it_and_no_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank meets the same bad input or divergence; whichever gets there first prints the line (a rank that
    exits first makes torchrun stop the others, rank 0 included)."""
    from cloudtune.runtime.stopping import EXIT_DIR_VAR, first_to_report

    monkeypatch.setenv(EXIT_DIR_VAR, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    assert first_to_report("input") and not first_to_report("input")  # rank 1 first: it says it, rank 0 does not
    assert first_to_report("diverged")  # another kind of failure is said once too
    monkeypatch.delenv(EXIT_DIR_VAR)  # no torchrun exit dir (one process, or another launcher): rank 0 says it
    assert not first_to_report("input")
    monkeypatch.setenv("RANK", "0")
    assert first_to_report("input")
