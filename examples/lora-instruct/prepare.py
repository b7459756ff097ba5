"""Get this example's base model, offline, into models/base.

    python examples/lora-instruct/prepare.py          # skips if models/base exists
    python examples/lora-instruct/prepare.py --force  # rebuild

Reuses the quickstart's pretrained tiny GPT-2 (examples/quickstart/models/tiny-gpt2, made by
examples/quickstart/prepare.py) when it is there: it is copied to models/base. Otherwise a small GPT-2 is built
here in a few seconds: a byte-level BPE tokenizer trained on this example's data and a freshly initialised
2-layer model (no pretraining: the fine-tune still shows the eval loss falling). Nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import base_model  # noqa: E402  (examples/base_model.py: shared by the examples)


def example_texts() -> list[str]:
    texts = []
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (HERE / "data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                texts.append(rec["prompt"] + rec["completion"])
    return texts


if __name__ == "__main__":
    raise SystemExit(base_model.main(HERE, example_texts))
