"""Shared helpers of the distributed tests: a dropout-free tiny GPT-2, job specs, weights, process lookup."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from tests.tiny_models import make_tiny_gpt2

# sentences of different lengths, so that batches carry padding (and per-rank padding differs from one big batch)
SENTENCES = [
    "the kettle sings when the water is hot",
    "a sail fills with wind and the boat moves north past the old harbour light",
    "roast the beans",
    "the river runs to the sea in spring and the fish swim up against it to the hills",
    "numbers 1 2 3 appear too",
    "the quick brown fox jumps over the lazy dog",
]


def make_deterministic_gpt2(path: Path) -> Path:
    """The tests' tiny GPT-2 with dropout switched off.

    Dropout draws a different mask for one batch of 8 than for two ranks' batches of 4, so with dropout on,
    N processes x B and 1 process x N*B are different computations; without it they are the same math.
    """
    make_tiny_gpt2(path)
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    config_path.write_text(json.dumps(config, indent=2))
    return path


def write_data(root: Path, n_train: int = 64) -> dict[str, str]:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": SENTENCES[(i * 5) % 6] + f" {i}"}) + "\n"
                                              for i in range(n_train)))
    (data / "eval.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    return {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")}


def write_spec(path: Path, model: Path, inputs: dict[str, str], *, hp: dict[str, Any], eval_set: bool = True,
               train_options: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A job spec at `path`: `train` on `model` with `hp` (and `train_options`, e.g. `distributed`), the rest of the
    top-level keys from `extra`."""
    import yaml

    spec = {
        "name": extra.pop("name", "dist"),
        "inputs": inputs,
        "train": {"model": str(model), "data": {"train": "train", "eval": "eval" if eval_set else None},
                  "hyperparameters": hp, **(train_options or {})},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def launch_and_wait(spec: Path, timeout_s: float = 300) -> Any:
    """`cloudtune.api.launch(spec)` and wait for the job to end; a job still running after `timeout_s` is cancelled
    (its processes stopped) and the test fails with the tail of its log."""
    import pytest

    from cloudtune import api

    job = api.launch(spec)
    try:
        job.wait(timeout=timeout_s)
    except TimeoutError:  # say where it stood, and stop its processes
        tail = "\n".join(job.logs())[-6000:]
        job.cancel()
        pytest.fail(f"job {spec.stem} did not end within {timeout_s:.0f} s; its log ends with:\n{tail}")
    return job

