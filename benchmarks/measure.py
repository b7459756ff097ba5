"""Run one side of a benchmark in a fresh Python subprocess and measure it: wall time, peak RSS, bounds.

    from measure import run_child
    result = run_child([sys.executable, script, "--child", ...], out_json, rss_limit_mb=20_000, time_limit_s=900)

Peak RSS is reported three ways:

* `self_maxrss_mb`: the child's own kernel high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`), exact; the child
  writes it into its result JSON (see `child_rusage`);
* `children_maxrss_mb`: the largest high-water mark among the child's own subprocesses (`RUSAGE_CHILDREN`, e.g.
  the workers of `datasets.map(num_proc=...)`), 0 when it started none;
* `tree_peak_rss_mb`: the largest sum of RSS over the child's whole process tree, sampled every `poll_s` by psutil
  (absent when psutil is not installed). Forked workers share their parent's pages, which every one of them counts
  in its RSS, so with workers this is an upper bound; hence also
* `tree_peak_pss_mb`: the largest sum of PSS (each shared page divided among the processes sharing it) over the
  tree, sampled every 5th poll (Linux): what the machine had to hold at once.

`peak_rss_mb` is the figure the benchmarks compare: the largest of the three (the sampled tree peak, unless a
spike between two samples left a higher high-water mark). A child that passes `rss_limit_mb` (tree RSS) or `time_limit_s` is killed (its whole tree)
and the result says so (`killed`: "rss" / "time") with what was measured up to then.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def child_rusage() -> dict[str, float]:
    """This process's (and its reaped subprocesses') peak RSS in MB, for a child to put in its result JSON."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / MB
    return {"self_maxrss_mb": round(me, 1), "children_maxrss_mb": round(kids, 1)}


def _tree_memory(proc: Any, pss: bool) -> tuple[int, int]:
    """(sum of RSS, sum of PSS or 0) over the process tree."""
    import psutil

    rss = prop = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            if pss:
                info = p.memory_full_info()
                rss, prop = rss + info.rss, prop + getattr(info, "pss", 0)
            else:
                rss += p.memory_info().rss
        except psutil.Error:
            pass
    return rss, prop


def _kill_tree(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the child leads its own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(cmd: list[str], out_json: Path, *, env: dict[str, str] | None = None, rss_limit_mb: float | None = None,
              time_limit_s: float | None = None, poll_s: float = 0.1, log: Path | None = None) -> dict[str, Any]:
    """Run `cmd` (which writes its result JSON to `out_json`) and return that result plus the measurements."""
    try:
        import psutil
    except ImportError:  # sampling off: the high-water marks alone
        psutil = None  # type: ignore[assignment]
    out_json = Path(out_json)
    out_json.unlink(missing_ok=True)
    sink = open(log, "wb") if log else subprocess.DEVNULL
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            start_new_session=True)
    watched = psutil.Process(proc.pid) if psutil else None
    peak = peak_pss = 0
    killed = None
    polls = 0
    try:
        while proc.poll() is None:
            if watched is not None:
                polls += 1
                rss, pss = _tree_memory(watched, pss=polls % 5 == 0)  # smaps is slower to read: every 5th poll
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            if rss_limit_mb is not None and peak > rss_limit_mb * MB:
                killed = "rss"
            elif time_limit_s is not None and time.monotonic() - started > time_limit_s:
                killed = "time"
            if killed:
                _kill_tree(proc.pid)
                proc.wait()
                break
            time.sleep(poll_s)
    except BaseException:
        _kill_tree(proc.pid)
        proc.wait()
        raise
    finally:
        if log:
            sink.close()  # type: ignore[union-attr]
    wall = time.monotonic() - started
    _kill_tree(proc.pid)  # anything the child left behind in its group
    result: dict[str, Any] = {}
    if out_json.is_file():
        result = json.loads(out_json.read_text())
    result.update({"returncode": proc.returncode, "wall_s": round(wall, 2), "killed": killed})
    if watched is not None:
        result["tree_peak_rss_mb"] = round(peak / MB, 1)
        if peak_pss:
            result["tree_peak_pss_mb"] = round(peak_pss / MB, 1)
    marks = [result.get("self_maxrss_mb") or 0, result.get("children_maxrss_mb") or 0]
    result["peak_rss_mb"] = max([result.get("tree_peak_rss_mb") or 0] + marks)
    if proc.returncode not in (0, None) and not killed and log:
        tail = log.read_text(errors="replace")[-3000:]
        result["log_tail"] = tail
    return result
