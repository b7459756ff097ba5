"""The user's mistakes and situations are never "internal error ... report it" (issue 12, kinds 4 and 5).

Kind 4: every exception type that user input can send to the CLI's last-resort handler ends as one line naming
the field or file, a "To fix:" line where one is known, exit 2; output into a closed pipe ends quietly (exit 141).
Kind 5: special files (FIFOs, sockets, devices) as inputs are refused at validate and never block a reader; an
input tree is sized from `stat` before it is hashed, and a huge or home-directory input is announced with its
size first."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloudtune.clierrors import SIGPIPE_EXIT, user_error
from cloudtune.errors import InvalidInput, JobInputError, SpecError
from cloudtune.hashing import HUGE_BYTES, check_input_tree, digest, input_tree, open_regular
from cloudtune.spec import load_spec

BIG = "9" * 5000
CASES = next((p / "shared" / "cases" for p in Path(__file__).resolve().parents[2:4] if (p / "shared" / "cases").is_dir()),
             Path("shared-cases-not-found"))


def run_cli(*args: str, cwd: Path, extra: dict[str, str] | None = None,
            stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDTUNE_HOME": str(cwd / ".ct"), "HF_HUB_OFFLINE": "1", **(extra or {})}
    env.pop("CLOUDTUNE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300)


def user_mistake(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one error line (and its fix), no traceback, no "internal"/"report it"."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and "report it" not in err and "CLOUDTUNE_DEBUG" not in err, err
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def train_spec(tmp_path: Path, data: str = "data.jsonl", model: str = "gpt2", extra: str = "") -> Path:
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: t\nresources: {{accelerator: cpu}}\ninputs: {{train: {data}}}\n"
                    f"train: {{model: {model}, data: {{train: train, text_field: text}}}}\n{extra}")
    if not (tmp_path / data).exists():
        (tmp_path / data).write_text('{"text": "hello"}\n')
    return spec


def command_spec(tmp_path: Path, body: str = "") -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "main.py").write_text("print('hi')\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: t\nresources: {{accelerator: cpu}}\ncommand: python main.py\ncode: ./src\n{body}")
    return spec


# ------------------------------------------------------------------------------- kind 4: integers past 4,300 digits
@pytest.mark.parametrize("body, field", [
    (f"resources: {{accelerator: cpu, nodes: {BIG}}}\n", "resources.nodes"),
    (f"env: {{SEED: {BIG}}}\n", "env.SEED"),
    (f"retries: {BIG}\n", "retries"),
    (f"tags: [1, {BIG}]\n", "tags.1"),
    (f"unknown_top: {{a: [{{b: -{BIG}}}]}}\n", "unknown_top.a.0.b"),
])
def test_a_huge_integer_in_the_spec_names_its_field(tmp_path: Path, body: str, field: str) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: t\ncommand: echo\n" + body)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert info.value.issues[0].path == field and "5,000 digits" in info.value.issues[0].message
    assert info.value.issues[0].line is not None


def test_a_huge_integer_in_set_names_the_key(tmp_path: Path) -> None:
    err = user_mistake(run_cli("validate", str(command_spec(tmp_path)), "--set", f"resources.nodes={BIG}",
                               cwd=tmp_path), "resources.nodes", "5,000 digits", "To fix:")
    assert BIG not in err  # the value is not echoed back in full
    ok = run_cli("validate", str(command_spec(tmp_path)), "--set", f"env.BIG={BIG}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr  # an env value is text, taken as written


@pytest.mark.parametrize("record, needle", [
    ('{"text": "a", "n": ' + BIG + '}', "more than 4,300 digits"),
    ('{"text": ' + "[" * 50_000 + "]" * 50_000 + "}", "nests its brackets too deeply"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_data_past_pythons_json_limits_names_the_file_and_line(tmp_path: Path, record: str, needle: str,
                                                                suffix: str) -> None:
    data = f"data{suffix}"
    (tmp_path / data).write_text('{"text": "fine"}\n' + record + "\n" if suffix == ".jsonl"
                                 else '[{"text": "fine"},\n' + record + "]\n")
    user_mistake(run_cli("validate", str(train_spec(tmp_path, data)), cwd=tmp_path), f"{data}, line 2", needle)


# ------------------------------------------------------------------------------- kind 4: the job's own checks, early
def test_a_hub_id_unreachable_offline_is_the_users_situation(tmp_path: Path) -> None:
    """`train.model: gpt2-nonexistent-xyz` with HF_HUB_OFFLINE: the local launch's preflight refuses it, exit 2."""
    spec = train_spec(tmp_path, model="gpt2-nonexistent-xyz")
    empty_cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    user_mistake(run_cli("launch", str(spec), cwd=tmp_path, extra=empty_cache),
                 "train.model: 'gpt2-nonexistent-xyz'", "HF_HUB_OFFLINE")
    valid = run_cli("validate", str(spec), cwd=tmp_path, extra=empty_cache)  # validate says so too, as a note
    assert valid.returncode == 0 and "note: train.model: 'gpt2-nonexistent-xyz' is not in the local" in valid.stderr
    assert not list((tmp_path / ".ct").glob("jobs/*"))  # nothing was started


def test_last_resort_classifies_each_user_exception() -> None:
    """Each exception type input can raise maps to a line and a fix (the CLI prints them, exit 2); a bug does not."""
    cases = {
        PermissionError(errno.EACCES, "Permission denied", "/data/x.jsonl"): ("'/data/x.jsonl'", "permission"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "/data"): ("Is a directory", "not a directory"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/b"): ("'/a/b'", "is a file"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "x"): ("'x'", "check the path"),
        OSError(errno.ENAMETOOLONG, "File name too long", "a" * 300): ("too long", "shorter path"),
        OSError(errno.ELOOP, "Too many levels of symbolic links", "l"): ("symbolic links", "loop"),
        OSError(errno.ENOSPC, "No space left on device"): ("No space left", "free some disk space"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"): ("not valid UTF-8", "UTF-8"),
        UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"): ("not valid UTF-8", "UTF-8"),
        RecursionError("maximum recursion depth exceeded"): ("nested too deeply", "flatten"),
        MemoryError(): ("out of memory", "smaller inputs"),
        JobInputError("data.jsonl, line 3: empty text"): ("data.jsonl, line 3", ""),
    }
    for exc, (said, fix) in cases.items():
        got = user_error(exc)
        assert got is not None and said in got[0] and fix in got[1], (exc, got)
    for bug in (KeyError("x"), TypeError("unsupported operand"), AttributeError("no attribute"),
                ConnectionResetError(errno.ECONNRESET, "reset")):
        assert user_error(bug) is None, bug  # cloudtune's own bug, or the network: not the user's input


def test_a_spec_that_is_a_directory_or_unreadable_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    proc = run_cli("validate", "dir.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "directory" in proc.stderr
    name = os.fsdecode(b"\xff\xfe.yaml")
    proc = run_cli("validate", name, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "report it" not in proc.stderr


@pytest.mark.parametrize("home", ["/dev/null", "fifo", "file"])
def test_a_cloudtune_home_that_is_not_a_directory_is_exit_2(tmp_path: Path, home: str) -> None:
    """CLOUDTUNE_HOME naming a file, a FIFO or /dev/null: the store cannot be made there (was FileExistsError,
    "report it")."""
    if home == "fifo":
        os.mkfifo(tmp_path / "ff")
        home = str(tmp_path / "ff")
    elif home == "file":
        (tmp_path / "f").write_text("x")
        home = str(tmp_path / "f")
    user_mistake(run_cli("list", cwd=tmp_path, extra={"CLOUDTUNE_HOME": home}), home, "To fix:")


# ------------------------------------------------------------------------------- kind 4: closed pipes
@pytest.mark.parametrize("args", [["catalog"], ["schema"], ["list"], ["catalog", "--json"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    """`cloudtune catalog | true`: the reader is gone before the first write (its end is closed before the start),
    so the outcome does not depend on timing. Quiet, exit 141 (128 + SIGPIPE) as a Unix tool."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = run_cli(*args, cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == SIGPIPE_EXIT and proc.stderr == "", (proc.returncode, proc.stderr)


def test_list_into_head_with_many_jobs(tmp_path: Path) -> None:
    """`cloudtune list | head -1` with more rows than one pipe buffer holds: the shell pipeline itself."""
    from cloudtune.store import JobRecord, JobStore

    home = tmp_path / ".ct"
    store = JobStore(home)
    for i in range(600):
        store.add(JobRecord(job_id=f"job-{i:04d}-20260101-000000-abcd", provider="local", name="job",
                            state="succeeded", created_at=1_700_000_000 + i, updated_at=1_700_000_000 + i))
    proc = subprocess.run(f"'{sys.executable}' -m cloudtune.cli list --limit 600 | head -1", shell=True, cwd=tmp_path,
                          env={**os.environ, "CLOUDTUNE_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert proc.stdout.startswith("JOB") and proc.stderr == "", proc.stderr


# ------------------------------------------------------------------------------- kind 5: special files
def test_case_25_fifo_input_is_refused_at_validate_and_dry_run(tmp_path: Path) -> None:
    case = CASES / "25-fifo-input"
    if not case.is_dir():
        pytest.skip("the shared cases are not in this checkout")
    import shutil

    work = tmp_path / "case"
    shutil.copytree(case, work)
    os.mkfifo(work / "pipe")
    for args in (["validate", "job.yaml"], ["launch", "--dry-run", "job.yaml"], ["launch", "job.yaml"],
                 ["launch", "--dry-run", "job.yaml", "--provider", "aws", "--set",
                  "providers.aws.role=arn:aws:iam::123456789012:role/R", "--set", "providers.aws.bucket=my-bucket",
                  "--set", "providers.aws.region=us-east-1"]):
        user_mistake(run_cli(*args, cwd=work), "inputs.extra", "named pipe (FIFO)", "not a regular file or directory")
    assert not list((work / ".ct").glob("jobs/*"))  # the launch started nothing that could block on the pipe


def _special(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays on disk
    elif kind == "device":
        path.symlink_to("/dev/zero")  # a character device that never ends
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "real-fifo")
        path.symlink_to(tmp_path / "real-fifo")
    return path


@pytest.mark.parametrize("kind, said", [("fifo", "named pipe"), ("socket", "socket"), ("device", "character device"),
                                        ("link-to-fifo", "named pipe")])
@pytest.mark.parametrize("inside", [False, True])
def test_special_files_in_inputs_are_refused_without_blocking(tmp_path: Path, kind: str, said: str,
                                                               inside: bool) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "ok.txt").write_text("x")
    special = _special(folder if inside else tmp_path, kind)
    target = folder if inside else special
    with pytest.raises(InvalidInput) as info:
        check_input_tree("extra", target)
    assert "inputs.extra" in str(info.value) and said in str(info.value)
    with pytest.raises(InvalidInput):
        digest(target)  # the planner's and the copier's reads refuse it too, before any read
    spec = command_spec(tmp_path, f"inputs: {{extra: {target}}}\n")
    # a link to a /dev path is refused by the spec's own path rule (a virtual file system), the rest here
    user_mistake(run_cli("validate", str(spec), cwd=tmp_path), "virtual file system" if target.name == "special-device" else said)


def test_open_regular_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """A FIFO with no writer: a plain open() would wait for ever; open_regular refuses it at once. Run in a thread
    with a bounded join, so a regression fails instead of hanging the suite."""
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            open_regular(fifo).close()
        except BaseException as exc:  # noqa: BLE001 - the outcome is asserted below
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("open_regular blocked on a FIFO")
    assert outcome and isinstance(outcome[0], InvalidInput) and "named pipe" in str(outcome[0])
    with open_regular(__file__) as fh:  # a regular file reads as usual
        assert fh.read(3) == b'"""'


def test_the_local_copy_refuses_a_fifo_placed_after_the_plan(tmp_path: Path) -> None:
    from cloudtune.local.copies import clone_file

    fifo = tmp_path / "late"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput):
        clone_file(fifo, tmp_path / "copy")


# ------------------------------------------------------------------------------- kind 5: sized before hashing
def test_an_input_tree_is_sized_from_stat(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "x.bin").write_bytes(b"1" * 10)
    (tree / "a" / "b" / "y.bin").write_bytes(b"2" * 32)
    (tree / "link.bin").symlink_to(tree / "x.bin")
    (tree / "broken").symlink_to(tmp_path / "nothing")
    sized = input_tree(tree)
    assert (sized.bytes, sized.files, sized.special) == (52, 3, [])
    assert digest(tree)[0] == sized.bytes  # the same files the hash reads


def test_a_huge_input_is_announced_with_its_size_before_hashing(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # sparse: HUGE_BYTES by stat, no blocks on disk; hashing it is left out below
        fh.truncate(HUGE_BYTES)
    said: list[str] = []

    class Announced(Exception):
        pass

    def notice(line: str) -> None:
        said.append(line)
        raise Announced  # stop here: the line came before any byte was hashed

    with pytest.raises(Announced):
        digest(big, notice=notice)
    assert said and "1.1 GB in 1 file(s)" in said[0] and str(big) in said[0]
    warning = check_input_tree("train", big)
    assert warning and "inputs.train" in warning and "1.1 GB" in warning


def test_a_home_directory_input_is_warned_about(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("x" * 100)
    env = {"HOME": str(home)}
    spec = command_spec(tmp_path, f"inputs: {{extra: {home}}}\n")
    proc = run_cli("validate", str(spec), cwd=tmp_path, extra=env)
    assert proc.returncode == 0, proc.stderr
    assert "inputs.extra" in proc.stderr and "home directory" in proc.stderr and "100 B in 1 file(s)" in proc.stderr
