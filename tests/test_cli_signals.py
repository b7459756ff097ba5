"""An attached `cloudtune launch` stops a local job alike on Ctrl-C, SIGTERM and SIGHUP (issue 12, kind 7), also
when it was started with SIGINT ignored, as a background job of a script is (kind 9). Asserts on events (a log
line seen, the exit status, the job's state), never on durations; every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WAIT_S = 240.0  # an upper bound for a loaded machine; the events end each wait long before it


def _spec(tmp_path: Path) -> Path:
    code = tmp_path / "src"
    code.mkdir()
    (code / "main.py").write_text("import time\nprint('job-started', flush=True)\ntime.sleep(900)\n")
    spec = tmp_path / "job.yaml"
    spec.write_text("name: sig\nresources: {accelerator: cpu}\ncommand: python main.py\ncode: ./src\n")
    return spec


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / ".ct"), "CLOUDTUNE_STOP_GRACE_S": "5"}
    env.pop("CLOUDTUNE_DEBUG", None)
    return env


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `bash script &` starts its background jobs


def _launch_and_signal(tmp_path: Path, signum: int, ignore_sigint: bool = False) -> tuple[int, str, str]:
    """Launch attached, wait for the job's first log line, send `signum`; (exit status, stderr, job id)."""
    proc = subprocess.Popen([sys.executable, "-m", "cloudtune.cli", "launch", str(_spec(tmp_path))], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignore_sigint if ignore_sigint else None)
    try:
        deadline = time.monotonic() + WAIT_S
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen.append(line)
            if "job-started" in line:
                break
        assert any("job-started" in s for s in seen), (seen, proc.poll())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job_id = next(s.split()[1] for s in seen if s.startswith("submitted "))
    return proc.returncode, err, job_id


def _state(tmp_path: Path, job_id: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudtune.cli", "status", job_id, "--json"], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["state"]


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_each_stop_signal_cancels_the_followed_local_job(tmp_path: Path, signame: str, code: int) -> None:
    rc, err, job_id = _launch_and_signal(tmp_path, getattr(signal, signame), ignore_sigint=signame == "SIGINT")
    assert rc == code and "Traceback" not in err and f"cancelled {job_id}" in err, (rc, err)
    assert _state(tmp_path, job_id) == "cancelled"


def test_stop_signals_restore_the_previous_handlers() -> None:
    from cloudtune.clierrors import StopSignals, Terminated

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Terminated) as info, StopSignals():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None  # handlers run at the next bytecode
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in before} == before
