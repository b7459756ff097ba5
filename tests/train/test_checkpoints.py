"""CheckpointStore on its own: complete-or-absent publication, what verification catches (truncation, a bit flip,
a missing manifest), background commits, and one full verification per job under torch.distributed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cloudtune.train.checkpoints import (
    MANIFEST_NAME,
    TMP_PREFIX,
    UNFINISHED_NAME,
    CheckpointStore,
    list_checkpoints,
    verify,
    write_manifest,
)


def _save(store: CheckpointStore, step: int, payload: bytes = b"", background: bool = False) -> Path | None:
    """What a save does: prepare a temp dir, write files into it, commit."""
    tmp = store.prepare(step)
    (tmp / "model.safetensors").write_bytes(payload or os.urandom(3000) + step.to_bytes(4, "little"))
    (tmp / "optimizer.pt").write_bytes(os.urandom(5000))
    (tmp / "sub").mkdir()
    (tmp / "sub" / "rng_state.pth").write_bytes(b"rng" * 10)
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return store.commit(tmp, step, background=background)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_commit_publishes_a_whole_checkpoint_with_sizes_and_chunk_hashes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    path = _save(store, 3)
    assert path == tmp_path / "checkpoint-3" and verify(path) is None
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["format"] == 2 and manifest["step"] == 3 and manifest["chunk_bytes"] > 0
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "sub/rng_state.pth", "trainer_state.json"}
    entry = manifest["files"]["optimizer.pt"]
    assert entry["size"] == 5000
    assert entry["sha256"] == [hashlib.sha256((path / "optimizer.pt").read_bytes()).hexdigest()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_each_chunk_is_hashed_and_a_flip_in_any_chunk_is_caught(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    blob = os.urandom(10_500)
    (ckpt / "optimizer.pt").write_bytes(blob)
    (ckpt / "empty.json").write_bytes(b"")
    manifest = write_manifest(ckpt, 1, chunk_bytes=1000)
    digests = manifest["files"]["optimizer.pt"]["sha256"]
    assert len(digests) == 11 and digests[5] == hashlib.sha256(blob[5000:6000]).hexdigest()
    assert manifest["files"]["empty.json"]["sha256"] == [hashlib.sha256(b"").hexdigest()]
    assert verify(ckpt) is None
    for at in (0, 5_432, 10_499):
        _flip(ckpt / "optimizer.pt", at)
        assert verify(ckpt) == "optimizer.pt does not match its sha256 in the manifest"
        assert verify(ckpt, full=False) is None  # sizes alone cannot see a same-size change
        _flip(ckpt / "optimizer.pt", at)
        assert verify(ckpt) is None


def test_a_file_truncated_after_the_rename_is_skipped_never_deleted(tmp_path: Path) -> None:
    warnings: list[str] = []
    _save(CheckpointStore(tmp_path, keep=2), 2)
    _save(CheckpointStore(tmp_path, keep=2), 4)
    torn = tmp_path / "checkpoint-4" / "optimizer.pt"
    torn.write_bytes(torn.read_bytes()[:1234])  # a cut-off upload / partial restore

    store = CheckpointStore(tmp_path, keep=2, warn=warnings.append)  # a restarted job
    assert store.latest_complete().step == 2
    assert verify(tmp_path / "checkpoint-4", full=False) == "optimizer.pt has 1234 bytes, manifest says 5000"
    assert len(warnings) == 1 and "checkpoint-4: optimizer.pt has 1234 bytes" in warnings[0]
    assert "left in place, never loaded" in warnings[0]

    assert _save(store, 4) == tmp_path / "checkpoint-4-1"  # the torn one keeps its name
    _save(store, 6)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-4", "checkpoint-4-1", "checkpoint-6"]  # 2 rotated out, the torn one kept
    assert torn.stat().st_size == 1234


def test_a_bit_flip_is_skipped_and_an_unfinished_save_is_never_loaded(tmp_path: Path) -> None:
    _save(CheckpointStore(tmp_path, keep=3), 1)
    _save(CheckpointStore(tmp_path, keep=3), 2)
    _flip(tmp_path / "checkpoint-2" / "model.safetensors", 100)
    unfinished = tmp_path / "checkpoint-3"  # killed before its manifest
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"partial")
    stale_tmp = tmp_path / f"{TMP_PREFIX}checkpoint-5"
    stale_tmp.mkdir()
    (stale_tmp / "model.safetensors").write_bytes(b"half")

    warnings: list[str] = []
    store = CheckpointStore(tmp_path, keep=3, warn=warnings.append)
    assert store.latest_complete().step == 1
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 2, 3]  # temp dirs are not checkpoints
    assert "checkpoint-3: manifest cloudtune-manifest.json is missing" in warnings[0]
    assert "checkpoint-2: model.safetensors does not match its sha256" in warnings[1]
    _save(store, 7)
    assert not stale_tmp.exists() and (unfinished / "model.safetensors").read_bytes() == b"partial"


def test_a_format_1_manifest_still_verifies(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights" * 100)
    files = {"model.safetensors": {"size": 700, "sha256": hashlib.sha256(b"weights" * 100).hexdigest()}}
    (ckpt / MANIFEST_NAME).write_text(json.dumps({"format": 1, "step": 5, "files": files}))
    assert verify(ckpt) is None and CheckpointStore(tmp_path, keep=1).latest_complete().step == 5
    _flip(ckpt / "model.safetensors", 3)
    assert verify(ckpt) == "model.safetensors does not match its sha256 in the manifest"
    files["model.safetensors"]["sha256"] = ["not", "a", "fit"]
    (ckpt / MANIFEST_NAME).write_text(json.dumps({"format": 2, "chunk_bytes": 1 << 20, "step": 5, "files": files}))
    assert verify(ckpt) == "manifest entry for model.safetensors is malformed"


def test_a_background_commit_publishes_later_and_reports_its_failure(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    published: list[Path] = []
    tmp = store.prepare(8)
    (tmp / "model.safetensors").write_bytes(os.urandom(2000))
    assert store.commit(tmp, 8, background=True, on_done=published.append) is None
    store.wait()
    assert published == [tmp_path / "checkpoint-8"] == [tmp] and verify(tmp) is None
    assert not (tmp / UNFINISHED_NAME).exists()

    _save(store, 9, background=True)
    _save(store, 10, background=True)  # joins 9's commit first; rotation keeps 1
    assert store.latest_complete().step == 10 and [c.step for c in list_checkpoints(tmp_path)] == [10]

    assert store.commit(tmp_path / f"{TMP_PREFIX}never-written", 11, background=True) is None
    with pytest.raises(RuntimeError, match="writing a checkpoint under .* failed"):
        store.wait()
    store.wait()  # reported once
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]


def _agree(rank: int, world: int, root: str, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        store = CheckpointStore(Path(root), keep=3)
        chosen = store.latest_complete()
        Path(out, f"rank{rank}.json").write_text(json.dumps({
            "chosen": chosen.path.name if chosen else None,
            "hashed": [p.name for p in store.verified_in_full],
        }))
    finally:
        dist.destroy_process_group()


def test_under_torch_distributed_only_rank_0_hashes_and_the_ranks_agree(tmp_path: Path) -> None:
    mp = pytest.importorskip("torch.multiprocessing")
    root = tmp_path / "ckpts"
    _save(CheckpointStore(root, keep=3), 1)
    _save(CheckpointStore(root, keep=3), 2)
    _flip(root / "checkpoint-2" / "optimizer.pt", 7)  # same size: only a hash can tell
    mp.spawn(_agree, args=(2, str(root), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == {"chosen": "checkpoint-1", "hashed": ["checkpoint-2", "checkpoint-1"]}
    assert rank1 == {"chosen": "checkpoint-1", "hashed": []}
