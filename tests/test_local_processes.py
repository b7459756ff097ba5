"""Every process a local job starts ends with the job: on max_runtime, on cancel, on a failed node of a multi-node
job, after a success that leaves a daemon behind, and between two attempts. Each job script writes the PIDs of
the processes it starts to a file; survivors are found by PID, and every process found is killed at the end."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from cloudtune import api

# each script appends its own PID and its children's to $PIDS
SCRIPTS = {
    # the member: two background sleeps and a wait
    "background": "echo $$ >> $PIDS\nsleep 300 & echo $! >> $PIDS\nsleep 300 & echo $! >> $PIDS\nwait\n",
    # a grandchild that leaves the node's process group and session
    "setsid": "echo $$ >> $PIDS\nsetsid sleep 300 & echo $! >> $PIDS\nsleep 300 & echo $! >> $PIDS\nwait\n",
    # a double fork: the sleeper's parent exits at once, so it is re-parented (to the subreaper, not to init)
    "double_fork": "echo $$ >> $PIDS\n( setsid sleep 300 & echo $! >> $PIDS ) \nsleep 300 & echo $! >> $PIDS\nwait\n",
}
IGNORES_TERM = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
kids = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(2)]
with open(os.environ["PIDS"], "a") as f:
    f.write("".join(f"{p}\\n" for p in [os.getpid(), *(k.pid for k in kids)]))
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The file job scripts write PIDs to; every PID in it that still runs at the end is killed."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTUNE_STOP_GRACE_S", "3")
    path = tmp_path / "pids.txt"
    path.write_text("")
    yield path
    for pid in _pids(path):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _survivors(path: Path) -> list[int]:
    time.sleep(0.3)  # a killed process leaves /proc as soon as it is reaped
    return [p for p in _pids(path) if _alive(p)]


def _job(tmp_path: Path, command: str, pid_file: Path, **extra: object) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, text in SCRIPTS.items():
        (src / f"{name}.sh").write_text(text)
    (src / "ignores_term.py").write_text(IGNORES_TERM)
    spec = {"name": "procs", "command": command, "code": "src", "env": {"PIDS": str(pid_file)}, **extra}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


COMMANDS = {"background": "bash background.sh", "setsid": "bash setsid.sh", "double_fork": "bash double_fork.sh",
            "ignores_term": "python ignores_term.py"}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_max_runtime_leaves_no_process(tmp_path: Path, pid_file: Path, case: str) -> None:
    # 10 s: far above the start of the node and its script's 3 processes, so all are up when the runtime ends
    job = api.launch(_job(tmp_path, COMMANDS[case], pid_file, resources={"max_runtime": 10}))
    assert job.wait(timeout=120) == "failed"
    assert "MaxRuntimeExceeded" in job.info()["failure_reason"]
    assert len(_pids(pid_file)) == 3
    assert _survivors(pid_file) == []


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_cancel_leaves_no_process(tmp_path: Path, pid_file: Path, case: str) -> None:
    job = api.launch(_job(tmp_path, COMMANDS[case], pid_file))
    _wait_for(lambda: len(_pids(pid_file)) == 3, 30, "the job's processes")
    job.cancel()
    assert job.wait(timeout=60) == "cancelled"
    assert _survivors(pid_file) == []


def test_success_that_leaves_a_daemon_leaves_no_process(tmp_path: Path, pid_file: Path) -> None:
    """As on a cloud, whatever runs when the container's main process exits is stopped with it."""
    job = api.launch(_job(tmp_path, 'setsid sleep 300 & echo $! >> "$PIDS"; sleep 300 & echo $! >> "$PIDS"', pid_file))
    assert job.wait(timeout=60) == "succeeded"
    assert len(_pids(pid_file)) == 2 and _survivors(pid_file) == []


FAILING_NODE = """\
if [ "$CLOUDTUNE_NODE_RANK" = "1" ]; then
  while [ "$(wc -l < "$PIDS")" -lt 5 ]; do sleep 0.1; done   # until the first node has started its processes
  exit 3
fi
echo $$ >> $PIDS
setsid sleep 300 & echo $! >> $PIDS
python ignores_term.py &
sleep 300
"""


def test_failed_node_of_a_multi_node_job_leaves_no_process(tmp_path: Path, pid_file: Path) -> None:
    spec = _job(tmp_path, "bash failing_node.sh", pid_file, resources={"nodes": 2}, retries=1)
    (tmp_path / "src/failing_node.sh").write_text(FAILING_NODE)
    job = api.launch(spec)
    assert job.wait(timeout=120) == "failed", "\n".join(job.logs())
    info = job.info()
    assert "exit code 3" in info["failure_reason"] and "[exit class: error, not retried]" in info["failure_reason"]
    assert len(_pids(pid_file)) == 5  # the shell, the setsid sleep, the python ignoring SIGTERM and its two children
    assert _survivors(pid_file) == []
    log = "\n".join(job.logs())
    assert "restarting" not in log and "[cloudtune] not retried:" in log  # a failure that would repeat


RETRY_AFTER_ORPHAN = """\
if [ -f "$PIDS.first" ]; then  # second attempt: the first attempt's orphan must be gone already
  for pid in $(cat "$PIDS"); do
    if [ -d /proc/$pid ] && ! grep -q ') Z' /proc/$pid/stat; then echo "alive $pid" >> "$PIDS.seen"; fi
  done
  echo checked >> "$PIDS.seen"
  exit 0
fi
touch "$PIDS.first"
setsid sleep 300 & echo $! >> $PIDS
exit 75
"""


def test_next_attempt_starts_once_the_last_one_left_no_process(tmp_path: Path, pid_file: Path) -> None:
    spec = _job(tmp_path, "bash retry.sh", pid_file, retries=1)
    (tmp_path / "src/retry.sh").write_text(RETRY_AFTER_ORPHAN)
    job = api.launch(spec)
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    assert Path(f"{pid_file}.seen").read_text() == "checked\n"
    assert "[exit class: infrastructure, retryable]" in "\n".join(job.logs())


@pytest.mark.parametrize("emulate", ["aws", "gcp"])  # Azure ML's code snapshot is unpacked in the job dir itself
def test_private_code_copy_is_removed(tmp_path: Path, pid_file: Path, monkeypatch: pytest.MonkeyPatch, emulate: str) -> None:
    """The per-process code copy under the temp dir is readable by its owner only, and gone when the job ends."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    command = 'stat -c %a "$PWD" >> "$PIDS.mode"; echo "$PWD" >> "$PIDS.mode"'
    job = api.launch(_job(tmp_path, command, pid_file, providers={"local": {"emulate": emulate}}))
    assert job.wait(timeout=60) == "succeeded", "\n".join(job.logs())
    mode, cwd = Path(f"{pid_file}.mode").read_text().split()
    if Path(cwd).parent == tmp:  # unpacked from a tarball into the temp dir (Vertex AI's bundle URI)
        assert mode == "700"
    else:  # unpacked by the contract itself, inside the job directory (SageMaker's /opt/ml/code)
        assert emulate == "aws" and Path(os.environ["CLOUDTUNE_HOME"]) in Path(cwd).parents
    assert list(tmp.iterdir()) == []


def test_threads_per_process(tmp_path: Path, pid_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, OMP_NUM_THREADS is the cores shared out between the processes; set by the user, it is left alone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    job = api.launch(_job(tmp_path, 'echo "$OMP_NUM_THREADS" >> "$PIDS.omp"', pid_file, resources={"nodes": 2}))
    assert job.wait(timeout=120) == "succeeded", "\n".join(job.logs())
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert Path(f"{pid_file}.omp").read_text().split() == [str(expected)] * 2
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    job = api.launch(_job(tmp_path, 'echo "$OMP_NUM_THREADS" >> "$PIDS.omp7"', pid_file))
    assert job.wait(timeout=60) == "succeeded"
    assert Path(f"{pid_file}.omp7").read_text().split() == ["7"]
    job = api.launch(_job(tmp_path, 'echo "$OMP_NUM_THREADS" >> "$PIDS.env"', pid_file, env={"PIDS": str(pid_file),
                                                                                            "OMP_NUM_THREADS": "5"}))
    assert job.wait(timeout=60) == "succeeded"
    assert Path(f"{pid_file}.env").read_text().split() == ["5"]



def test_thread_share() -> None:
    from cloudtune.local.supervisor import thread_env

    cores = len(os.sched_getaffinity(0))
    assert thread_env(1, 1, {}) == {}  # one process: torch's own default
    assert thread_env(1, 2, {}) == {"OMP_NUM_THREADS": str(max(1, cores // 2))}
    assert thread_env(4, 1000, {}) == {"OMP_NUM_THREADS": "1"}
    assert thread_env(2, 2, {"OMP_NUM_THREADS": "3"}) == {}


def test_a_job_whose_supervisor_died_leaves_no_process(tmp_path: Path, pid_file: Path) -> None:
    """If the supervisor itself is killed, the next look at the job fails it and stops what it left running."""
    import json

    job = api.launch(_job(tmp_path, COMMANDS["setsid"], pid_file))
    _wait_for(lambda: len(_pids(pid_file)) == 3, 30, "the job's processes")
    state_file = Path(os.environ["CLOUDTUNE_HOME"]) / "jobs" / job.job_id / "state.json"
    os.kill(json.loads(state_file.read_text())["supervisor_pid"], signal.SIGKILL)
    _wait_for(lambda: job.status() == "failed", 30, "the job to fail")
    assert "remaining process(es) were killed" in job.info()["failure_reason"]
    assert json.loads(state_file.read_text())["state"] == "failed"
    assert _survivors(pid_file) == []


ESCAPES = """\
echo $$ >> $PIDS
(cd / && exec env -i /usr/bin/sleep 300) & echo $! >> $PIDS
(cd / && exec env -i /usr/bin/setsid /usr/bin/sleep 300) & echo $! >> $PIDS
wait
"""


def test_a_child_that_drops_its_environment_ends_with_a_dead_supervisor(tmp_path: Path, pid_file: Path) -> None:
    """A child that clears its environment (`env -i`) and leaves the job dir is still found, by its session; one
    that also left the session (`setsid`) is found as a descendant of a process in the job's session."""
    import json

    spec = _job(tmp_path, "bash escapes.sh", pid_file)
    (tmp_path / "src/escapes.sh").write_text(ESCAPES)
    job = api.launch(spec)
    _wait_for(lambda: len(_pids(pid_file)) == 3, 30, "the job's processes")
    env_less = _pids(pid_file)[1]
    _wait_for(lambda: b"CLOUDTUNE" not in Path(f"/proc/{env_less}/environ").read_bytes(), 30, "env -i to take effect")
    state_file = Path(os.environ["CLOUDTUNE_HOME"]) / "jobs" / job.job_id / "state.json"
    os.kill(json.loads(state_file.read_text())["supervisor_pid"], signal.SIGKILL)
    _wait_for(lambda: job.status() == "failed", 30, "the job to fail")
    assert "remaining process(es) were killed" in job.info()["failure_reason"]
    assert _survivors(pid_file) == []
