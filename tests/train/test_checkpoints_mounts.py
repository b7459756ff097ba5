"""Checkpoints on bucket mounts: the emulated gcsfuse / blobfuse semantics refuse directory renames (in this process
and, through the start-up hook, in every process of an `emulate: gcp|azure` job), and CheckpointStore keeps its
guarantees without one: a save cut at any point never looks complete and is cleared by the next save, a cut rotation
never loses the newest complete checkpoint, and foreign or damaged dirs are kept."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune.local import mounts
from cloudtune.train.checkpoints import (
    MANIFEST_NAME,
    UNFINISHED_NAME,
    CheckpointStore,
    list_checkpoints,
    verify,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["gcsfuse", "blobfuse"])
def mounted(request: pytest.FixtureRequest, tmp_path: Path):
    """`tmp_path/mount` with the emulated driver's rename semantics installed in this process."""
    root = tmp_path / "mount"
    root.mkdir()
    mounts.install([str(root)], request.param)
    try:
        yield root
    finally:
        mounts.uninstall()


def _files(path: Path, step: int) -> None:
    (path / "model.safetensors").write_bytes(os.urandom(3000) + step.to_bytes(4, "little"))
    (path / "sub").mkdir(exist_ok=True)
    (path / "sub" / "rng_state.pth").write_bytes(b"rng" * 10)


def _save(store: CheckpointStore, step: int, background: bool = False) -> Path | None:
    path = store.prepare(step)
    _files(path, step)
    return store.commit(path, step, background=background)


def test_the_emulated_mount_refuses_a_directory_rename_and_allows_a_file_rename(mounted: Path) -> None:
    (mounted / "a").mkdir()
    (mounted / "a" / "f.txt").write_text("x")
    for rename in (os.rename, os.replace, lambda s, d: Path(s).rename(d), lambda s, d: Path(s).replace(d)):
        with pytest.raises(OSError) as caught:
            rename(mounted / "a", mounted / "b")
        assert caught.value.errno == errno.ENOTSUP and "directory rename on an emulated" in str(caught.value)
    outside = mounted.parent / "outside"
    outside.mkdir()
    with pytest.raises(OSError):
        os.rename(outside, mounted / "in")  # a rename into the mount is refused too
    os.rename(mounted / "a" / "f.txt", mounted / "a" / "g.txt")  # files: allowed, as on both drivers
    shutil.move(str(mounted / "a"), str(mounted / "b"))  # falls back to copy and delete, as on the real mount
    assert (mounted / "b" / "g.txt").read_text() == "x" and not (mounted / "a").exists()
    os.rename(outside, mounted.parent / "elsewhere")  # outside the mount: a plain disk


def test_saves_commit_without_a_rename_on_the_mount(mounted: Path) -> None:
    store = CheckpointStore(mounted / "ckpt", keep=2)
    for step in (2, 4, 6):
        assert _save(store, step) == mounted / "ckpt" / f"checkpoint-{step}"
    _save(store, 8, background=True)
    store.wait()
    assert [c.step for c in list_checkpoints(store.root)] == [6, 8]
    for ckpt in list_checkpoints(store.root):
        assert verify(ckpt.path) is None and not (ckpt.path / UNFINISHED_NAME).exists()
    assert CheckpointStore(store.root, keep=2).latest_complete().step == 8


def test_a_save_cut_before_its_manifest_is_never_loaded_and_the_next_save_clears_it(mounted: Path) -> None:
    store = CheckpointStore(mounted, keep=3)
    _save(store, 1)
    cut = store.prepare(2)  # killed while writing: files there, no manifest
    _files(cut, 2)
    assert verify(cut) == f"manifest {MANIFEST_NAME} is missing (the checkpoint was not completed)"
    warnings: list[str] = []
    restarted = CheckpointStore(mounted, keep=3, warn=warnings.append)
    assert restarted.latest_complete().step == 1 and "checkpoint-2" in warnings[0]
    assert _save(restarted, 2) == mounted / "checkpoint-2"  # the unfinished one of this code was cleared first
    assert [c.step for c in list_checkpoints(mounted)] == [1, 2]


def test_a_save_cut_after_its_manifest_is_complete(mounted: Path) -> None:
    store = CheckpointStore(mounted, keep=3)
    path = store.prepare(5)
    _files(path, 5)
    write_manifest(path, 5)  # killed before the unfinished marker was removed
    assert (path / UNFINISHED_NAME).exists() and verify(path) is None
    restarted = CheckpointStore(mounted, keep=3)
    assert restarted.latest_complete().step == 5
    _save(restarted, 6)
    assert verify(path) is None  # complete: never cleared as unfinished
    (path / "model.safetensors").write_bytes(b"cut")  # damaged later: kept, as every damaged checkpoint is
    CheckpointStore(mounted, keep=3).prepare(7)
    assert (path / "model.safetensors").read_bytes() == b"cut"


def test_a_foreign_incomplete_dir_is_kept_and_a_damaged_name_moves_the_save_on(mounted: Path) -> None:
    foreign = mounted / "checkpoint-3"  # no manifest, no marker: not ours to delete
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"partial")
    store = CheckpointStore(mounted, keep=1)
    assert _save(store, 3) == mounted / "checkpoint-3-1"
    _save(store, 4)
    assert sorted(p.name for p in mounted.iterdir()) == ["checkpoint-3", "checkpoint-4"]
    assert (foreign / "model.safetensors").read_bytes() == b"partial"


def test_a_rotation_cut_short_leaves_the_newest_complete_and_is_cleared_next(mounted: Path) -> None:
    store = CheckpointStore(mounted, keep=2)
    _save(store, 1)
    _save(store, 2)
    doomed = mounted / "checkpoint-1"  # rotation cut where `rotate` has marked it and removed its manifest
    (doomed / UNFINISHED_NAME).write_text("this checkpoint is being deleted\n")
    (doomed / MANIFEST_NAME).unlink()
    warnings: list[str] = []
    restarted = CheckpointStore(mounted, keep=2, warn=warnings.append)
    assert restarted.latest_complete().step == 2 and not warnings  # the newer one is looked at first
    _save(restarted, 3)
    assert not doomed.exists() and [c.step for c in list_checkpoints(mounted)] == [2, 3]


def test_rotation_never_deletes_the_only_complete_checkpoint(mounted: Path) -> None:
    store = CheckpointStore(mounted, keep=1)
    _save(store, 1)
    torn = store.prepare(2)
    _files(torn, 2)
    store.commit(torn, 2)
    (torn / "model.safetensors").write_bytes(b"cut")  # damaged after it was complete
    restarted = CheckpointStore(mounted, keep=1)
    assert restarted.latest_complete() is None  # 1 was rotated when 2 was complete; 2 is damaged now
    _save(restarted, 3)
    assert sorted(p.name for p in mounted.iterdir()) == ["checkpoint-2", "checkpoint-3"]  # damaged kept


HOOK_CHECK = """
import json, os, sys
root = sys.argv[1]
os.makedirs(os.path.join(root, "d"))
try:
    os.rename(os.path.join(root, "d"), os.path.join(root, "e"))
    print(json.dumps({"refused": False}))
except OSError as exc:
    print(json.dumps({"refused": True, "errno": exc.errno, "message": str(exc)}))
"""


@pytest.mark.parametrize("emulate", ["gcp", "azure"])
def test_the_start_up_hook_gives_every_job_process_the_mount_semantics(tmp_path: Path, emulate: str) -> None:
    from cloudtune.local.supervisor import container_env

    root = tmp_path / "mount"
    root.mkdir()
    env = container_env({**mounts.node_env(emulate, [str(root)]), "PATH": os.environ["PATH"]}, [])
    assert env["PYTHONPATH"].split(os.pathsep)[0] == mounts.HOOK_DIR
    proc = subprocess.run([sys.executable, "-c", HOOK_CHECK, str(root)], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["refused"] and out["errno"] == errno.ENOTSUP, proc.stderr
    assert mounts.DRIVERS[emulate] in out["message"]
    assert mounts.node_env("aws", [str(root)]) == {}  # SageMaker's /opt/ml/checkpoints is a plain disk
