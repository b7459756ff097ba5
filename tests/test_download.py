"""`cloudtune download` on the local launcher and its refusals, the kit's download pieces (safe tar extraction,
putting a download in place, directory copies), and `train.model: job:<JOB>` resolved through the job store.

Jobs are recorded in a real job store (CLOUDTUNE_HOME under tmp_path) with real model directories; the real
fine-tunes are in tests/test_job_model_e2e.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

from cloudtune import api
from cloudtune.errors import InvalidInput
from cloudtune.data.archives import safe_extract
from cloudtune.kit.download import copy_tree, into_place
from cloudtune.store import JobRecord, JobStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_model_dir(path: Path, *, adapter: bool = False) -> Path:
    """Files the plan-time checks take for a saved model (or a LoRA adapter): config/adapter, weights, tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    if adapter:
        (path / "adapter_config.json").write_text('{"base_model_name_or_path": "/elsewhere/base", "peft_type": "LORA"}')
        (path / "adapter_model.safetensors").write_bytes(placeholder_weights())
    else:
        (path / "config.json").write_text('{"model_type": "gpt2", "n_positions": 1024}')
        (path / "model.safetensors").write_bytes(placeholder_weights())
    (path / "tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)
    return path


def record(job_id: str, *, provider: str = "local", state: str = "succeeded", model_uri: str | None = None,
           native_id: str | None = None, plan: dict[str, Any] | None = None, **extra: Any) -> JobRecord:
    now = time.time()
    rec = JobRecord(job_id=job_id, provider=provider, name=job_id.rsplit("-", 1)[0], state=state, created_at=now,
                    updated_at=now, native_id=native_id or job_id, model_uri=model_uri, plan=plan, extra=extra)
    JobStore().add(rec)
    return rec


def local_job(tmp_path: Path, job_id: str = "first-20260101-000000-abcd", state: str = "succeeded",
              **kw: Any) -> Path:
    """A finished local job as the local launcher leaves it: model and checkpoint dirs under its job dir."""
    job_dir = tmp_path / "home" / "jobs" / job_id
    model = make_model_dir(job_dir / "hosts/algo-1/opt/ml/model")
    (model / "sub").mkdir()
    (model / "sub/extra.bin").write_bytes(os.urandom(3000))
    ckpt = job_dir / "hosts/algo-1/opt/ml/checkpoints/checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"ckpt")
    record(job_id, state=state, model_uri=str(model), native_id=str(job_dir),
           checkpoint_uri=str(ckpt.parent), failure_reason=None, **kw)
    return model


def cli(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ download, local
def test_cli_downloads_a_local_job_into_the_default_dir(tmp_path: Path, home: Path) -> None:
    model = local_job(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    res = cli("download", "first", home=home, cwd=work)  # a unique prefix of the id
    assert res.returncode == 0, res.stderr
    target = work / "first-20260101-000000-abcd-model"
    assert f"to {target}" in res.stdout and "copying" in res.stderr
    assert files(target) == files(model)
    assert [p.name for p in work.iterdir()] == [target.name]  # no temp dir left beside it


def test_download_with_checkpoints(tmp_path: Path, home: Path) -> None:
    model = local_job(tmp_path)
    target = api.download("first", tmp_path / "out", checkpoints=True)
    got = files(target)
    assert got.pop("checkpoints/checkpoint-4/model.safetensors") == b"ckpt"
    assert got == files(model)


def test_download_refusals_exit_2_with_a_fix(tmp_path: Path, home: Path) -> None:
    local_job(tmp_path)
    local_job(tmp_path, "broken-20260101-000000-abcd", state="failed")
    record("nomodel-20260101-000000-abcd", model_uri=None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/mine.txt").write_text("keep me")
    cases = [(["download", "broken", str(tmp_path / "a")], "is failed, not succeeded"),
             (["download", "nomodel", str(tmp_path / "b")], "no model location"),
             (["download", "first", str(tmp_path / "full")], "exists and is not empty"),
             (["download", "nosuchjob", str(tmp_path / "c")], "no job 'nosuchjob'")]
    for args, needle in cases:
        res = cli(*args, home=home, cwd=tmp_path)
        assert res.returncode == 2 and needle in res.stderr and "To fix:" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert not any((tmp_path / n).exists() for n in "abc")
    assert files(tmp_path / "full") == {"mine.txt": b"keep me"}


def test_force_adds_to_a_non_empty_dir_and_removes_nothing(tmp_path: Path, home: Path) -> None:
    model = local_job(tmp_path)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    (out / "sub/mine.bin").write_text("keep me too")
    (out / "config.json").write_text("old")
    api.download("first", out, force=True)
    got = files(out)
    assert got.pop("mine.txt") == b"keep me" and got.pop("sub/mine.bin") == b"keep me too"
    assert got == files(model)  # config.json replaced by the job's


def test_a_running_job_is_refused(tmp_path: Path, home: Path) -> None:
    """The state is asked of the launcher when the store does not know it has ended."""
    import json

    job_dir = tmp_path / "home/jobs/live-20260101-000000-abcd"
    job_dir.mkdir(parents=True)
    (job_dir / "state.json").write_text(json.dumps({"state": "running", "supervisor_pid": os.getpid()}))
    record("live-20260101-000000-abcd", state="running", model_uri=str(job_dir / "model"), native_id=str(job_dir))
    with pytest.raises(InvalidInput, match="is running, not succeeded") as err:
        api.download("live", tmp_path / "out")
    assert "cloudtune logs -f" in str(err.value) and not (tmp_path / "out").exists()


def test_an_interrupted_download_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with into_place(tmp_path / "out") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()  # an empty directory is taken as it is
    with into_place(tmp_path / "empty") as tmp:
        (tmp / "a").write_text("a")
    assert files(tmp_path / "empty") == {"a": b"a"} and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_copy_refuses_links(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path / "m")
    (src / "link").symlink_to("/etc/hostname")
    with pytest.raises(InvalidInput, match="symbolic link"):
        copy_tree(src, tmp_path / "out")


# ------------------------------------------------------------------------------------------ download_prefix
class DictStore:
    """The kit's ObjectStore protocol over a dict of key -> bytes (a store written for the test); `stated` is the MD5
    it claims per key, `served` what it really writes."""

    scheme = "mem"

    def __init__(self, objects: dict[str, bytes], stated: dict[str, str] | None = None,
                 served: dict[str, bytes] | None = None) -> None:
        self.objects, self.stated, self.served = objects, stated or {}, served or {}

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        return sorted((k, len(v)) for k, v in self.objects.items() if k.startswith(prefix))

    def get(self, bucket: str, key: str, path: Path, progress: Any) -> str | None:
        import hashlib

        data = self.served.get(key, self.objects[key])
        path.write_bytes(data)
        return self.stated.get(key, hashlib.md5(self.objects[key]).hexdigest())


def _call(fn: Any, *args: Any, what: str = "") -> Any:
    return fn(*args)


def test_download_prefix_takes_the_folder_not_its_siblings(tmp_path: Path) -> None:
    from cloudtune.kit.download import download_prefix

    store = DictStore({"o/model/config.json": b"{}", "o/model/sub/w.bin": b"w" * 10, "o/model/": b"",
                       "o/model-old/config.json": b"old", "o/model.tar.gz": b"tar"})
    assert download_prefix(store, "mem://b/o/model", tmp_path / "a", _call) == 12
    assert files(tmp_path / "a") == {"config.json": b"{}", "sub/w.bin": b"w" * 10}
    assert download_prefix(store, "mem://b/o/model.tar.gz", tmp_path / "b", _call) == 3  # one object, by its name
    assert files(tmp_path / "b") == {"model.tar.gz": b"tar"}
    assert download_prefix(store, "mem://b/o/none/", tmp_path / "c", _call, missing_ok=True) == 0
    with pytest.raises(InvalidInput, match="nothing is stored under mem://b/o/none/"):
        download_prefix(store, "mem://b/o/none/", tmp_path / "c", _call)


@pytest.mark.parametrize("store, error, needle", [
    (DictStore({"m/w.bin": b"abc"}, served={"m/w.bin": b"ab"}), "DownloadError", "2 bytes written, 3 expected"),
    (DictStore({"m/w.bin": b"abc"}, served={"m/w.bin": b"abd"}), "DownloadError", "do not match the object's MD5"),
    (DictStore({"m/../../etc/x": b"abc"}), "InvalidInput", "does not name a file inside the download directory"),
    (DictStore({"m/a": b"1", "m/a/b": b"2"}), "InvalidInput", "also an object's name"),
])
def test_download_prefix_checks_what_it_writes(tmp_path: Path, store: DictStore, error: str, needle: str) -> None:
    from cloudtune.errors import CloudtuneError
    from cloudtune.kit.download import download_prefix

    with pytest.raises(CloudtuneError, match=needle) as err:
        download_prefix(store, "mem://b/m/", tmp_path / "out", _call, progress=False)
    assert type(err.value).__name__ == error and err.value.fix
    assert not (tmp_path / "etc").exists()


# ------------------------------------------------------------------------------------------ safe extraction
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, needle", [
    ((tarfile.TarInfo("../escape.txt"), b"x"), "outside the target directory"),
    ((tarfile.TarInfo("a/../../escape.txt"), b"x"), "outside the target directory"),
    ((tarfile.TarInfo("/etc/evil"), b"x"), "outside the target directory"),
    ((_link("config.json", "/etc/passwd"), None), "is a link"),
    ((_link("weights", "config.json", tarfile.LNKTYPE), None), "is a link"),
])
def test_safe_extract_refuses_escapes_and_links(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None],
                                                 needle: str) -> None:
    ok = tarfile.TarInfo("config.json")
    archive = _tar(tmp_path / "model.tar.gz", [(ok, b"{}"), member])
    with pytest.raises(InvalidInput, match=needle):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()


def test_safe_extract_unpacks_files_and_folders(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "model.tar.gz", [(tarfile.TarInfo("./config.json"), b"{}"),
                                               (tarfile.TarInfo("adapter/adapter_config.json"), b"{}")])
    assert safe_extract(archive, tmp_path / "out") == ["adapter/adapter_config.json", "config.json"]


# ------------------------------------------------------------------------------------------ train.model: job:<JOB>
def write_spec(tmp_path: Path, model: str, **extra: Any) -> Path:
    import yaml

    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data/train.jsonl").write_text('{"text": "a"}\n')
    spec = {"name": "second", "inputs": {"train": "data/train.jsonl"}, "train": {"model": model}, **extra}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_job_model_of_a_local_job_is_its_model_dir(tmp_path: Path, home: Path) -> None:
    model = local_job(tmp_path)
    plan = api.plan(write_spec(tmp_path, "job:first"))
    assert plan.spec["train"]["model"] == "model" and plan.spec["inputs"]["model"] == str(model)
    assert any(u.source == str(model) for u in plan.uploads)  # copied into the new job like any local model


@pytest.mark.parametrize("setup, needle", [
    (lambda tmp: None, "no job 'nope'"),
    (lambda tmp: local_job(tmp, "nope-20260101-000000-abcd", state="failed"), "is failed, not succeeded"),
    (lambda tmp: record("nope-20260101-000000-abcd", model_uri=None), "recorded no model location"),
])
def test_job_model_refusals_name_the_field_and_line(tmp_path: Path, home: Path, setup: Any, needle: str) -> None:
    setup(tmp_path)
    spec = write_spec(tmp_path, "job:nope")
    for command in (["validate", str(spec)], ["launch", str(spec), "--dry-run"], ["launch", str(spec), "-p", "aws", "--dry-run"]):
        res = cli(*command, home=home, cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"{spec}:5: train.model: 'job:nope': " in res.stderr and needle in res.stderr, res.stderr
        assert "To fix:" in res.stderr


def test_a_cloud_model_cannot_start_a_local_job(tmp_path: Path, home: Path) -> None:
    record("sm-20260101-000000-abcd", provider="aws", model_uri="s3://b/out/sm/output/model.tar.gz")
    res = cli("launch", str(write_spec(tmp_path, "job:sm")), "--dry-run", home=home, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "s3://b/out/sm/output/model.tar.gz" in res.stderr and "reads this machine's disk only" in res.stderr
    assert "`cloudtune download sm-20260101-000000-abcd DIR`, then set train.model: DIR" in res.stderr


def test_a_lora_job_brings_its_base(tmp_path: Path, home: Path) -> None:
    """A job whose output is an adapter: its base (from the job's recorded plan) travels as input base_model."""
    base = make_model_dir(tmp_path / "base")
    adapter = make_model_dir(tmp_path / "home/jobs/lora-1/model", adapter=True)
    plan = {"spec": {"inputs": {"model": str(base)}, "train": {"model": "model", "lora": {"r": 4}}}}
    record("lora-20260101-000000-abcd", model_uri=str(adapter), plan=plan)
    got = api.plan(write_spec(tmp_path, "job:lora")).spec
    assert got["train"]["model"] == "model" and got["inputs"]["model"] == str(adapter)
    assert got["train"]["base_model"] == "base_model" and got["inputs"]["base_model"] == str(base)
    # merged, or a hub base: no base input
    for plan_spec, expect in (({"inputs": {}, "train": {"model": "gpt2", "lora": {"r": 4}}}, "gpt2"),
                              ({"inputs": {}, "train": {"model": "gpt2", "lora": {"r": 4, "merge": True}}}, None)):
        record(f"l{len(plan_spec['train']['lora'])}-20260101-000000-abcd", model_uri=str(adapter), plan={"spec": plan_spec})
        got = api.plan(write_spec(tmp_path, f"job:l{len(plan_spec['train']['lora'])}")).spec
        assert got["train"].get("base_model") == expect and "base_model" not in got["inputs"]


# ------------------------------------------------------------------------------------------ in the container
def test_a_channel_holding_a_model_tarball_is_unpacked_once(tmp_path: Path) -> None:
    """SageMaker delivers another job's model.tar.gz as a file in the channel dir: the runtime unpacks it."""
    from cloudtune.runtime.modelarchive import unpacked_model_archive
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.train.models import resolve_model_source

    model = make_model_dir(tmp_path / "m")
    channel = tmp_path / "opt/ml/input/data/model"
    channel.mkdir(parents=True)
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        for p in sorted(model.iterdir()):
            tar.add(p, arcname=p.name)
    ctx = RuntimeContext.single_process(tmp_path / "work", {"model": channel}, provider="aws")
    source = Path(resolve_model_source(ctx, "model"))
    assert source == channel / "model" and files(source) == files(model)
    mtime = (source / "config.json").stat().st_mtime_ns
    again = Path(resolve_model_source(ctx, "model"))  # a second process finds it unpacked
    assert again == source and (source / "config.json").stat().st_mtime_ns == mtime
    # an archive that would escape is one clear line inside the job
    from cloudtune.errors import JobInputError

    evil = tmp_path / "evil"
    evil.mkdir()
    _tar(evil / "model.tar.gz", [(_link("config.json", "/etc/passwd"), None)])
    with pytest.raises(JobInputError, match="train.model: model.tar.gz: member 'config.json' is a link"):
        unpacked_model_archive(evil)
    assert [p.name for p in evil.iterdir() if not p.name.startswith(".cloudtune")] == ["model.tar.gz"]


def test_every_installed_launcher_downloads_with_one_signature() -> None:
    import importlib.util
    import inspect

    from cloudtune.launcher import BUILTIN_LAUNCHERS, launcher_class

    for name, target in BUILTIN_LAUNCHERS.items():
        if importlib.util.find_spec(target.split(":")[0].split(".")[0]) is None:
            continue
        params = inspect.signature(launcher_class(name).download).parameters
        assert list(params) == ["self", "ref", "dest", "checkpoints"], name
        assert params["checkpoints"].kind is inspect.Parameter.KEYWORD_ONLY and params["checkpoints"].default is False
