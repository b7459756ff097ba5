"""Orphans: how many processes of a local job outlive it, for each way a job's processes can try to.

    python benchmarks/local_orphans.py [--workdir DIR]

Each case is a `command` job whose processes append their PIDs to a file; when the job has ended, the processes
of that file still running are the survivors (then killed here, by PID). Cases: two background sleeps and a
`wait`; a child and grandchildren that ignore SIGTERM; a `setsid` grandchild; each ended by `max_runtime: 5s`
and by `cancel`; a two-node job whose second node fails while the first runs a `setsid` sleeper and a
SIGTERM-ignoring child; and a job whose supervisor is killed (SIGKILL). Prints one JSON object: case -> {"state", "pids", "survivors", "seconds"}. Target: 0
survivors everywhere. Runs against whichever cloudtune is importable (PYTHONPATH a checkout to measure it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = {
    "background.sh": "echo $$ >> $PIDS\nsleep 300 & echo $! >> $PIDS\nsleep 300 & echo $! >> $PIDS\nwait\n",
    "setsid.sh": "echo $$ >> $PIDS\nsetsid sleep 300 & echo $! >> $PIDS\nsleep 300 & echo $! >> $PIDS\nwait\n",
    "ignores_term.py": (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'\n"
        "kids = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(2)]\n"
        "open(os.environ['PIDS'], 'a').write(''.join(f'{p}\\n' for p in [os.getpid(), *(k.pid for k in kids)]))\n"
        "time.sleep(300)\n"),
    "failing_node.sh": (
        'if [ "$CLOUDTUNE_NODE_RANK" = "1" ]; then\n'
        '  while [ "$(wc -l < "$PIDS")" -lt 5 ]; do sleep 0.1; done\n  exit 3\nfi\n'
        "echo $$ >> $PIDS\nsetsid sleep 300 & echo $! >> $PIDS\npython ignores_term.py &\nsleep 300\n"),
}
CASES = {  # name -> (command, how it ends, expected PIDs, extra spec)
    "background/max_runtime": ("bash background.sh", "max_runtime", 3, {}),
    "background/cancel": ("bash background.sh", "cancel", 3, {}),
    "ignores_sigterm/max_runtime": ("python ignores_term.py", "max_runtime", 3, {}),
    "ignores_sigterm/cancel": ("python ignores_term.py", "cancel", 3, {}),
    "setsid/max_runtime": ("bash setsid.sh", "max_runtime", 3, {}),
    "setsid/cancel": ("bash setsid.sh", "cancel", 3, {}),
    "two_nodes/second_node_fails": ("bash failing_node.sh", "itself", 5, {"resources": {"nodes": 2}}),
    "setsid/supervisor_killed": ("bash setsid.sh", "supervisor_killed", 3, {}),
}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_case(name: str, base: Path) -> dict[str, object]:
    from cloudtune import api

    command, ends, expected, extra = CASES[name]
    work = base / name.replace("/", "-")
    (work / "src").mkdir(parents=True)
    for file, text in SCRIPTS.items():
        (work / "src" / file).write_text(text)
    pids = work / "pids.txt"
    pids.write_text("")
    resources = {"max_runtime": 5 if ends == "max_runtime" else 3600, **extra.get("resources", {})}
    spec = {"name": "orphans", "command": command, "code": "src", "resources": resources, "env": {"PIDS": str(pids)}}
    (work / "job.yaml").write_text(json.dumps(spec))
    job = api.launch(work / "job.yaml")
    deadline = time.monotonic() + 60
    while len(pids.read_text().split()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    if ends == "cancel":
        job.cancel()
    elif ends == "supervisor_killed":  # the supervisor itself dies (kill -9, out of memory)
        state = json.loads((base / "home/jobs" / job.job_id / "state.json").read_text())
        os.kill(int(state["supervisor_pid"]), signal.SIGKILL)
    state = job.wait(timeout=180)
    seconds = time.monotonic() - started
    time.sleep(1.0)  # what is killed at the end is gone by now
    recorded = [int(p) for p in pids.read_text().split()]
    survivors = [p for p in recorded if alive(p)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return {"state": state, "pids": len(recorded), "survivors": len(survivors), "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="cloudtune-orphans-"))
    os.environ["CLOUDTUNE_HOME"] = str(base / "home")
    report = {name: run_case(name, base) for name in CASES}
    print(json.dumps(report, indent=2))
    return 0 if all(r["survivors"] == 0 for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
