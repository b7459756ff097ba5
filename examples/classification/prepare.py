"""Get this example's base model, offline, into models/base (the classifier head is added by the recipe).

    python examples/classification/prepare.py          # skips if models/base exists
    python examples/classification/prepare.py --force  # rebuild

Reuses the quickstart's pretrained tiny GPT-2 (examples/quickstart/models/tiny-gpt2, made by
examples/quickstart/prepare.py) when it is there: it is copied to models/base. Otherwise a small GPT-2 is built
here in a few seconds: a byte-level BPE tokenizer trained on this example's data and a freshly initialised
2-layer model (no pretraining: the classifier still learns these labels). Nothing is downloaded.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import base_model  # noqa: E402  (examples/base_model.py: shared by the examples)


def example_texts() -> list[str]:
    texts = []
    for name in ("train.csv", "eval.csv"):
        with open(HERE / "data" / name, newline="", encoding="utf-8") as fh:
            texts.extend(row["text"] for row in csv.DictReader(fh))
    return texts


if __name__ == "__main__":
    raise SystemExit(base_model.main(HERE, example_texts))
