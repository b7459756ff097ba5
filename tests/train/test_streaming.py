"""train.data.streaming: the data read as a 🤗 IterableDataset in file order, packed greedily in order, and a run
resumed from a checkpoint continues exactly at its position in the stream (same weights as an uninterrupted run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cloudtune.spec import CheckpointSpec, DataSpec  # noqa: E402
from cloudtune.train.causal_lm import run_causal_lm  # noqa: E402
from cloudtune.train.checkpoints import list_checkpoints  # noqa: E402
from cloudtune.train.data import encode_input  # noqa: E402
from cloudtune.train.packing import pack_stream  # noqa: E402

from .conftest import make_ctx, make_train  # noqa: E402

TEXTS = [f"boat {i} sails {'north ' * (1 + i % 5)}at dawn" for i in range(40)]


def _write(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_a_stream_is_read_and_packed_greedily_in_order(tokenizer, tmp_path: Path) -> None:
    import datasets

    d = tmp_path / "data"
    _write(d / "a.jsonl", TEXTS[:25])
    _write(d / "b.jsonl", TEXTS[25:])
    enc = encode_input(d, None, DataSpec(streaming=True), tokenizer, 32, streaming=True)
    assert isinstance(enc.dataset, datasets.IterableDataset) and enc.examples is None
    examples = [x["input_ids"] for x in enc.dataset]
    expected = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in TEXTS]
    assert examples == expected  # file order, nothing shuffled
    rows = list(pack_stream(enc.dataset, 40))
    flat = [ids for r in rows for ids in _split(r["input_ids"], r["seq_lengths"])]
    assert flat == expected  # every example whole, in order
    assert all(len(r["input_ids"]) <= 40 for r in rows) and len(rows) < len(expected)
    for r, nxt in zip(rows, rows[1:]):  # greedy: the next example did not fit
        assert len(r["input_ids"]) + nxt["seq_lengths"][0] > 40


def _split(ids: list[int], lengths: list[int]) -> list[list[int]]:
    out, start = [], 0
    for n in lengths:
        out.append(ids[start:start + n])
        start += n
    return out


@pytest.mark.slow
def test_a_resumed_stream_matches_an_uninterrupted_run(tiny_gpt2: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file

    def run(root: Path) -> dict:
        ctx = make_ctx(root, {"train": _write(root / "in" / "train" / "t.jsonl", TEXTS).parent})
        train = make_train(tiny_gpt2, eval_name=None, data={"streaming": True, "packing": True}, max_steps=8,
                           batch_size=2, max_seq_len=40)
        return run_causal_lm(ctx, train, CheckpointSpec(every_steps=4, keep=3))

    whole = tmp_path / "whole"
    reference = run(whole)
    assert reference["global_step"] == 8 and "train_examples" not in reference  # a stream is not counted
    card = (whole / "model" / "README.md").read_text()
    assert "`train` (streamed)" in card and "packed greedily in stream order" in card
    # a second run that only has the first checkpoint of the first: it resumes at step 4 of the stream
    resumed_root = tmp_path / "resumed"
    first = next(c for c in list_checkpoints(whole / "checkpoints") if c.step == 4)
    shutil.copytree(first.path, resumed_root / "checkpoints" / first.path.name)
    capsys.readouterr()
    resumed = run(resumed_root)
    assert "(step 4)" in capsys.readouterr().out and resumed["global_step"] == 8
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(resumed_root / "model" / "model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"streaming + packing, resumed at step 4 of 8: max abs weight diff {diff}")
    assert diff < 1e-6
