"""The processes of one node share its output (the container's stdout and stderr, or the local supervisor's pipe);
each line written there stays whole however the writers split it (cloudtune.runtime.streams)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.runtime.streams import PIPE_BUF, relay, split_lines

LINES = 300
# a user's script under PYTHONUNBUFFERED=1 (set in every job's container): each print is several write(2)s
WORKER = f"""\
import os, sys
rank = os.environ["RANK"]
for i in range({LINES}):
    print("out", "rank", rank, "line", i, "end")
    print("err", "rank", rank, "line", i, "end", file=sys.stderr)
    sys.stdout.write("piece rank " + rank); sys.stdout.write(" line " + str(i)); sys.stdout.write(" end\\n")
"""
WHOLE = re.compile(r"(out|err|piece) rank (\d) line (\d+) end")


@pytest.mark.parametrize("emulate", ["aws", "azure"])
def test_the_lines_of_a_commands_ranks_reach_the_log_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           emulate: str) -> None:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src/worker.py").write_text(WORKER)
    spec = {"name": "lines", "command": "python worker.py", "code": "src",
            "resources": {"processes_per_node": 2}, "providers": {"local": {"emulate": emulate}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs()[-50:])
    logs = list(job.logs())
    theirs = [line for line in logs if not line.startswith("[cloudtune]")]
    garbled = [line for line in theirs if not WHOLE.fullmatch(line)]
    assert not garbled, garbled[:5]
    seen = {WHOLE.fullmatch(line).groups() for line in theirs}  # type: ignore[union-attr]
    assert seen == {(kind, rank, str(i)) for kind in ("out", "err", "piece") for rank in "01" for i in range(LINES)}
    ours = [line for line in logs if line.startswith("[cloudtune]")]
    assert sum("running command in" in line for line in ours) == 2, ours


WRITER = """\
import sys
from cloudtune.runtime.streams import whole_lines
whole_lines()
for i in range(2000):
    print("[cloudtune]", "writer", sys.argv[1], "step", i, "of", 2000, flush=True)
"""


def test_processes_that_print_in_pieces_write_whole_lines_to_one_pipe(tmp_path: Path) -> None:
    """Four processes print to one pipe at once, each line in seven pieces as print(*args) makes them."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    read, write = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(n)], stdout=write, env=env) for n in range(4)]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        lines = pipe.read().decode().splitlines()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    pattern = re.compile(r"\[cloudtune\] writer (\d) step (\d+) of 2000")
    assert [line for line in lines if not pattern.fullmatch(line)] == []
    assert len(lines) == 8000 and len(set(lines)) == 8000


def test_lines_end_at_a_newline_a_crlf_or_a_carriage_return() -> None:
    lines, rest = split_lines(b"one\ntwo\r\n 10%|#\r 20%|##\rhalf")
    assert lines == [b"one\n", b"two\r\n", b" 10%|#\r", b" 20%|##\r"] and rest == b"half"


def test_a_carriage_return_at_the_end_of_a_read_waits_for_the_next_byte() -> None:
    """A "\r\n" cut between two reads stays one line: the "\r" waits, unless the output has ended."""
    assert split_lines(b"abc\r") == ([], b"abc\r")
    assert split_lines(b"abc\r" + b"\nnext") == ([b"abc\r\n"], b"next")
    assert split_lines(b"abc\r", final=True) == ([b"abc\r"], b"")


def test_a_line_over_pipe_buf_is_cut_into_pieces_each_one_write() -> None:
    long = b"x" * (2 * PIPE_BUF + 10)
    lines, rest = split_lines(long + b"\nnext")
    assert [len(line) for line in lines] == [PIPE_BUF, PIPE_BUF, 11] and b"".join(lines) == long + b"\n"
    assert rest == b"next"


def test_a_relay_whose_reader_is_gone_drains_its_source(tmp_path: Path) -> None:
    """The relay's output pipe lost its reader: the writer behind the relay still runs to its end."""
    source_read, source_write = os.pipe()
    out_read, out_write = os.pipe()
    os.close(out_read)
    t = threading.Thread(target=relay, args=(os.fdopen(source_read, "rb"), out_write), daemon=True)
    t.start()
    with os.fdopen(source_write, "wb") as w:
        for _ in range(64):
            w.write(b"y" * 8191 + b"\n")  # 512 KiB: far over what a pipe holds without a reader
    t.join(timeout=120)
    os.close(out_write)
    assert not t.is_alive()


def test_a_relay_passes_bytes_through_unchanged(tmp_path: Path) -> None:
    data = b"".join(f"line {i} \xc3\xa9\r\n".encode("latin-1") for i in range(1000)) + b"no end"
    source_read, source_write = os.pipe()
    out_read, out_write = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(out_read, "rb").read()), daemon=True)
    reader.start()
    t = threading.Thread(target=relay, args=(os.fdopen(source_read, "rb"), out_write), daemon=True)
    t.start()
    with os.fdopen(source_write, "wb") as w:
        w.write(data)
    t.join(timeout=120)
    os.close(out_write)
    reader.join(timeout=120)
    assert got == [data]
