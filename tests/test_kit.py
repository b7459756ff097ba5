"""The launcher kit's own contracts: content-addressed uploads over the object-store protocol (skip by full key,
refuse a source changed since the plan), staging checked against the plan's hash, and the wheel lock's digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cloudtune.bundle import build_bundle
from cloudtune.errors import CloudtuneError, InvalidInput
from cloudtune.hashing import digest
from cloudtune.kit import staging
from cloudtune.kit.bootstrap import load_lock, stage_wheelhouse
from cloudtune.kit.objectstore import upload_all
from cloudtune.plan import Upload


class MemoryStore:
    """An object store held in a dict: the protocol's upload methods, nothing of cloudtune's."""

    scheme = "mem"

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.objects

    def put(self, bucket: str, key: str, path: Path, progress: Any) -> None:
        self.objects[(bucket, key)] = path.read_bytes()

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        return sorted((k, len(v)) for (b, k), v in self.objects.items() if b == bucket and k.startswith(prefix))


def call(fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _upload(path: Path) -> Upload:
    size, sha = digest(path)
    return Upload(str(path), f"mem://b/inputs/{sha}/{path.name}" + ("/" if path.is_dir() else ""), size, sha)


def test_uploads_skip_what_is_there_by_key_and_refuse_changed_sources(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.txt").write_text("a" * 100)
    (tmp_path / "d/b.txt").write_text("b" * 50)
    (tmp_path / "f.jsonl").write_text("{}\n" * 10)
    store = MemoryStore()
    ups = [_upload(tmp_path / "d"), _upload(tmp_path / "f.jsonl")]
    assert upload_all(ups, store, call) == 180
    assert upload_all(ups, store, call) == 0  # a relaunch sends nothing
    # an object under the same key is "there" whatever its size: the key carries the content hash
    assert len(store.objects) == 3

    (tmp_path / "f.jsonl").write_text("{}\n" * 11)  # edited after the plan
    with pytest.raises(InvalidInput, match="changed since the plan was made"):
        upload_all([ups[1]], MemoryStore(), call)


def test_staged_bundle_must_match_the_plan(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print(1)\n")
    files = staging.cloudtune_files(False, {".cloudtune/job.json": "{}"})
    planned = staging.compose(build_bundle(code), files)
    up = Upload(str(tmp_path / "home/bundles" / f"{planned.sha256}.tar.gz"), "mem://b/bundles/x.tar.gz",
                planned.size, planned.sha256, staging.recipe(build_bundle(code), files))
    assert not Path(up.source).exists()  # the plan wrote nothing
    staging.stage(up)
    assert digest(Path(up.source))[1] == planned.sha256

    (code / "train.py").write_text("print(2)\n")
    Path(up.source).unlink()
    with pytest.raises(InvalidInput, match="changed since the plan"):
        staging.stage(up)
    assert not Path(up.source).exists()


def test_lock_digest_is_the_staged_wheelhouse_digest(tmp_path: Path, lock_dir: Path) -> None:
    lock = load_lock("sagemaker-pytorch-py312", lock_dir)
    house = stage_wheelhouse(lock, tmp_path / "house", tmp_path / "cache")
    assert digest(house) == lock.digest()


def test_a_wheel_that_does_not_match_its_lock_is_refused(tmp_path: Path, lock_dir: Path) -> None:
    path = lock_dir / "vertex-pytorch-py310.json"
    data = json.loads(path.read_text())
    data["wheels"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    path.write_text(json.dumps(data))
    with pytest.raises(CloudtuneError, match="the lock says"):
        stage_wheelhouse(load_lock("vertex-pytorch-py310", lock_dir), tmp_path / "house", tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.whl"))  # nothing unverified is kept


@pytest.mark.parametrize("target", ["sagemaker-pytorch-py312", "vertex-pytorch-py310", "cloudtune-gpu-py311"])
def test_shipped_locks_are_complete_and_pinned(target: str) -> None:
    """Every wheel is hash-pinned, served by PyPI, built for the image's interpreter, and the closure holds what
    cloudtune (with its train extra where the target runs `train:` jobs) needs beyond torch (which the image has)."""
    from cloudtune.kit.bootstrap import TARGETS

    lock = load_lock(target)
    t = TARGETS[target]
    names = {w.name.lower().replace("_", "-") for w in lock.wheels}
    need = {"pydantic", "pydantic-core", "pyyaml", "click"}
    if "train" in t.root_extras:
        need |= {"transformers", "tokenizers", "safetensors", "accelerate", "peft", "pyarrow", "huggingface-hub"}
    else:  # a `command:` job's lock: cloudtune without the recipes' libraries
        assert "transformers" not in names
    assert need <= names and "torch" not in names and not any(n.startswith("nvidia") for n in names)
    for w in lock.wheels:
        assert len(w.sha256) == 64 and w.size > 0 and w.url.startswith("https://files.pythonhosted.org/")
        assert w.filename.endswith(".whl") and w.url.endswith(w.filename)
        tags = w.filename[:-4].split("-")[-3:]
        assert tags[0] in ("py3", "py2.py3", t.abi) or tags[0].startswith(("cp3", "py3")), w.filename
        assert tags[2] == "any" or all(p.endswith("x86_64") for p in tags[2].split(".")), w.filename
