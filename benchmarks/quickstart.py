"""The quickstart's first command, timed: prepare the starting model, then fine-tune it on the local launcher.

    python benchmarks/quickstart.py

Prints one JSON object: wall time of each half, eval loss before/after and the model dir.
(Package installation is not timed: on a fresh machine add the pip install time.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CLOUDTUNE_HOME=home)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "examples/quickstart/prepare.py"), "--force"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        t1 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "cloudtune.cli", "launch", str(ROOT / "examples/quickstart/job.yaml"), "--json"],
                             env=env, check=True, capture_output=True, text=True)
        t2 = time.perf_counter()
        info = json.loads(res.stdout)
        metrics = json.loads((Path(info["model_uri"]) / "metrics.json").read_text())
    print(json.dumps({
        "prepare_s": round(t1 - t0, 1),
        "launch_s": round(t2 - t1, 1),
        "total_s": round(t2 - t0, 1),
        "state": info["state"],
        "eval_loss_before": round(metrics["eval_loss_before"], 4),
        "eval_loss_after": round(metrics["eval_loss_after"], 4),
        "tokens_per_second": round(metrics["tokens_per_second"], 1),
    }, indent=2))


if __name__ == "__main__":
    main()
