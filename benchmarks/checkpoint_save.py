"""Checkpoint save time: cloudtune's save path (CloudtuneTrainer + CheckpointStore) against the plain transformers
`Trainer._save_checkpoint`, side by side in one process, on CPU.

    python benchmarks/checkpoint_save.py [--saves 5] [--keep 2] [--n-embd 512] [--n-layer 4] [--vocab 8192]

Model: a GPT-2 built from a config (never downloaded; ~17M parameters at the defaults: ~68 MB of fp32 weights and
~137 MB of AdamW state, so ~205 MB per checkpoint). Each side is its own Trainer with its own copy of the model,
trained one step (so the optimizer state exists), with the same TrainingArguments; the cloudtune side is the real
Trainer subclass from `cloudtune.train.trainer` with a `CheckpointStore(keep=K)`, the plain side rotates with
`save_total_limit=K` (`--keep`, default 2; 0: neither side deletes anything). Each round saves once with every
side in alternating order (a first warm-up round is dropped); `os.sync()` runs (untimed) before each save so no side
pays for another's dirty pages. Timed per save:

* `trainer_s`: the plain Trainer's `_save_checkpoint` (written to the page cache, not fsynced: not crash-safe);
* `trainer_fsync_s`: the same plus an fsync of each file it wrote (what "durable" costs for that layout);
* `cloudtune_s`: cloudtune's save as training sees it mid-run (`is_in_train`, not stopping): the files are written
  and the commit (fsync, sha256 of 64 MiB chunks in parallel, manifest, rename, rotation) runs in the background;
* `cloudtune_published_s`: from the start of that save until its checkpoint is published (the background commit
  joined), i.e. when a crash could no longer lose it;
* `cloudtune_stop_s`: a save that stops training (SIGTERM, last step), which commits before returning.

Also timed once: picking the checkpoint to resume from in a fresh process (`latest_complete`): full verification
(what rank 0 does) against a manifest-and-sizes check (what the other ranks do).

Prints one JSON object with the per-save figures, their medians and ratio = cloudtune_s / trainer_s (target <= 1.1).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_model(n_embd: int, n_layer: int, vocab: int) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=8)
    return GPT2LMHeadModel(config)


def make_trainer(cls: type, model: Any, out: Path, keep: int, store: Any = None) -> Any:
    """A Trainer of class `cls` (given `store` as its CheckpointStore, if any) trained for one step on random
    tokens, so its optimizer has state."""
    import torch
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-4,
                             save_strategy="no", save_total_limit=keep or None, report_to="none", disable_tqdm=True,
                             use_cpu=True, remove_unused_columns=False, log_level="error", seed=0)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    from transformers.trainer_callback import PrinterCallback

    trainer = cls(model=model, args=args, train_dataset=data)
    trainer.remove_callback(PrinterCallback)
    if store is not None:
        trainer.ct_store, trainer.ct_last_saved_step = store, None
    trainer.train()
    return trainer


def _fsync_tree(directory: Path) -> None:
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _timed(fn: Callable[[], Any]) -> float:
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(plain: Any, ours: Any, step: int, flip: bool) -> dict[str, float]:
    """One save of each kind at global step `step`; returns seconds by kind."""
    out: dict[str, float] = {}

    def save_plain() -> None:
        plain.state.global_step = step
        out["trainer_s"] = _timed(lambda: plain._save_checkpoint(plain.model, None))
        start = time.perf_counter()
        _fsync_tree(Path(plain.args.output_dir) / f"checkpoint-{step}")
        out["trainer_fsync_s"] = out["trainer_s"] + time.perf_counter() - start

    def save_ours() -> None:
        ours.state.global_step, ours.is_in_train, ours.control.should_training_stop = step, True, False
        out["cloudtune_s"] = _timed(lambda: ours._save_checkpoint(ours.model, None))
        start = time.perf_counter()
        ours.ct_store.wait()
        out["cloudtune_published_s"] = out["cloudtune_s"] + time.perf_counter() - start

    def save_ours_stopping() -> None:
        ours.state.global_step, ours.is_in_train, ours.control.should_training_stop = step + 1, True, True
        out["cloudtune_stop_s"] = _timed(lambda: ours._save_checkpoint(ours.model, None))

    sides = [save_plain, save_ours, save_ours_stopping]
    for side in (reversed(sides) if flip else sides):
        side()
    return out


def resume_pick(root: Path) -> dict[str, float]:
    """Seconds to choose the checkpoint to resume from: full verification (rank 0) vs manifest and sizes."""
    from cloudtune.train.checkpoints import CheckpointStore, list_checkpoints, verify

    start = time.perf_counter()
    chosen = CheckpointStore(root, keep=2).latest_complete()
    full = time.perf_counter() - start
    assert chosen is not None and chosen.path == list_checkpoints(root)[-1].path
    start = time.perf_counter()
    assert verify(chosen.path, full=False) is None
    return {"resume_verify_full_s": round(full, 4), "resume_verify_sizes_s": round(time.perf_counter() - start, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--keep", type=int, default=2, help="checkpoints kept by each side (0: no rotation)")
    opts = parser.parse_args()

    from transformers import Trainer
    from transformers.utils import logging as hf_logging

    from cloudtune.train.checkpoints import CheckpointStore
    from cloudtune.train.trainer import CloudtuneTrainer

    hf_logging.set_verbosity_error()
    model = build_model(opts.n_embd, opts.n_layer, opts.vocab)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="ct-ckpt-bench-", dir=os.environ.get("CT_BENCH_DIR")) as tmp:
        work = Path(tmp)
        plain = make_trainer(Trainer, copy.deepcopy(model), work / "plain", opts.keep)
        ours = make_trainer(CloudtuneTrainer, copy.deepcopy(model), work / "cloudtune", opts.keep,
                            store=CheckpointStore(work / "cloudtune", keep=opts.keep or 1_000_000))
        rounds = [one_round(plain, ours, 10 * (i + 1), flip=i % 2 == 1) for i in range(opts.saves + 1)][1:]
        newest = max((work / "cloudtune").glob("checkpoint-*"), key=lambda p: p.stat().st_mtime)
        ckpt_bytes = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
        resume = resume_pick(work / "cloudtune")
    medians = {k: round(statistics.median(r[k] for r in rounds), 4) for k in rounds[0]}
    print(json.dumps({
        "model": f"GPT-2 n_embd={opts.n_embd} n_layer={opts.n_layer} vocab={opts.vocab}", "parameters": params,
        "checkpoint_mb": round(ckpt_bytes / 1e6, 1), "saves": opts.saves, "keep": opts.keep, "rounds": rounds, "median_s": medians,
        "ratio": round(medians["cloudtune_s"] / medians["trainer_s"], 3),
        "ratio_published_vs_trainer_fsync": round(medians["cloudtune_published_s"] / medians["trainer_fsync_s"], 3),
        "ratio_stop_vs_trainer_fsync": round(medians["cloudtune_stop_s"] / medians["trainer_fsync_s"], 3),
        **resume, "cpus": os.cpu_count(), "python": platform.python_version(),
    }, indent=1))


if __name__ == "__main__":
    main()
