"""Shared fixtures of the recipe tests: tiny models built locally (never downloaded), data writers, contexts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import make_tiny_gpt2

from cloudtune.runtime.types import RuntimeContext  # noqa: E402
from cloudtune.spec import TrainSpec  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

TEXTS = [f"the boat number {i % 4} sails north at dawn with {i % 3} crew" for i in range(24)]
INSTRUCTIONS = [
    {"prompt": f"Question: how many crew on boat {i % 4}?\nAnswer:", "completion": f" {i % 3} crew sail north"}
    for i in range(24)
]
CHATS = [
    {"messages": [
        {"role": "system", "content": "you answer briefly"},
        {"role": "user", "content": f"where does boat {i % 4} sail?"},
        {"role": "assistant", "content": f"north at dawn {i % 3}"},
        {"role": "user", "content": "and then?"},
        {"role": "assistant", "content": "back south"},
    ]}
    for i in range(24)
]
SHAPES = {"text": [{"text": t} for t in TEXTS], "instruction": INSTRUCTIONS, "chat": CHATS}


@pytest.fixture(autouse=True)
def _no_stop_watchdog_left():
    """A recipe run in this process that received SIGTERM armed the stop watchdog (cloudtune.runtime.stopping),
    which would end this process at its deadline: cancel it when the test is over."""
    yield
    from cloudtune.runtime.stopping import disarm

    disarm()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 of tests/tiny_models.py, with no chat template (the tokenizer as saved)."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_chat_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 whose tokenizer has a simple chat template."""
    from transformers import AutoTokenizer

    path = make_tiny_gpt2(tmp_path_factory.mktemp("tinychat") / "tiny-gpt2")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer(tiny_chat_gpt2: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_chat_gpt2))


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write records as .jsonl / .json / .csv (nested values as JSON text) / .parquet, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            for r in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), str(path))
    else:
        raise AssertionError(suffix)
    return path


def make_ctx(root: Path, inputs: dict[str, Path]) -> RuntimeContext:
    return RuntimeContext.single_process(root, inputs, job_name="test", provider="local")


def make_train(model: Path | str, *, eval_name: str | None = "eval", task: str = "causal-lm", data: dict | None = None,
               lora: dict | None = None, **hp: Any) -> TrainSpec:
    hyper = {"epochs": 1, "learning_rate": 3e-3, "batch_size": 8, "max_seq_len": 48, "seed": 7} | hp
    spec: dict[str, Any] = {"task": task, "model": str(model), "data": {"train": "train", "eval": eval_name, **(data or {})},
                            "hyperparameters": hyper}
    if lora is not None:
        spec["lora"] = lora
    return TrainSpec.model_validate(spec)
