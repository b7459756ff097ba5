"""The job the launch benchmarks submit: a `data_mb` MB JSONL train input, a small eval input, a hub-id model
(`salt` changes the data's bytes, so the content-addressed upload cannot skip it)."""

from __future__ import annotations

from pathlib import Path


def write_job(base: Path, data_mb: int, salt: str = "") -> Path:
    (base / "data").mkdir(parents=True)
    line = '{"text": "' + salt + "lorem ipsum dolor sit amet " * 8 + '"}\n'
    with open(base / "data/train.jsonl", "w") as fh:
        for _ in range(max(1, data_mb * 1_000_000 // len(line))):
            fh.write(line)
    (base / "data/eval.jsonl").write_text(line * 100)
    job = base / "job.yaml"
    job.write_text("name: bench\nresources: {accelerator: L4:1}\n"
                   "inputs: {train: data/train.jsonl, eval: data/eval.jsonl}\ntrain: {model: gpt2}\n")
    return job
