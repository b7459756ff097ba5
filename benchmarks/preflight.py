"""Preflight cost: median wall time of `cloudtune validate` (plan-time checks, no torch) and of
`cloudtune validate --deep` (tokenizer + model skeleton + one record of each shape) on examples/quickstart, and
the in-process time of the plan-time checks on a 100 MB JSONL input.

    python examples/quickstart/prepare.py && python benchmarks/preflight.py [--runs 5]

Prints one JSON object, with the machine's load average (other work on a small machine inflates the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples/quickstart/job.yaml"


def median_wall(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def big_input_seconds(tmp: Path) -> float:
    """check_local_inputs on a 100 MB JSONL (the check reads a bounded sample, whatever the size)."""
    from cloudtune.jobinputs import check_local_inputs, with_model_input
    from cloudtune.spec import load_spec

    (tmp / "data").mkdir(parents=True)
    line = json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 5}) + "\n"
    with open(tmp / "data/train.jsonl", "w", encoding="utf-8") as fh:
        fh.write(line * (100_000_000 // len(line)))
    shutil.copytree(ROOT / "examples/quickstart/models/tiny-gpt2", tmp / "models/tiny-gpt2")
    (tmp / "job.yaml").write_text("name: big\ninputs: {train: data/train.jsonl}\ntrain: {model: ./models/tiny-gpt2}\n")
    spec = with_model_input(load_spec(tmp / "job.yaml"))
    start = time.perf_counter()
    check_local_inputs(spec)
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    if not (ROOT / "examples/quickstart/models/tiny-gpt2/config.json").is_file():
        sys.exit("run python examples/quickstart/prepare.py first")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLOUDTUNE_HOME"] = str(Path(tmp) / "home")
        result = {
            "cpus": os.cpu_count(),
            "runs": runs,
            "validate_median_s": median_wall(["validate", str(QUICKSTART)], runs),
            "validate_deep_median_s": median_wall(["validate", "--deep", str(QUICKSTART)], runs),
            "plan_checks_100mb_jsonl_s": big_input_seconds(Path(tmp) / "big"),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
