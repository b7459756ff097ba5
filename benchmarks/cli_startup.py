"""CLI start-up: median wall time of `cloudtune --help` and of a local `launch --dry-run`, and the heavy
modules each imports (there must be none).

    python benchmarks/cli_startup.py [--runs 15]

Prints one JSON object. Targets: --help < 0.15 s, local dry run < 0.5 s (2-core machine).
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

HEAVY = ("torch", "transformers", "boto3", "botocore", "sagemaker", "google.cloud", "azure")
ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - start)
    return out


def heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sys; from cloudtune.cli import main; sys.argv=['cloudtune', *sys.argv[1:]]; main()", *args],
                         env=env, capture_output=True, text=True)
    mods = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    return sorted(m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("cloudtune")
    if exe is None:
        sys.exit("install cloudtune first: pip install -e .")
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CLOUDTUNE_HOME=home)
        spec = str(ROOT / "examples/quickstart/job.yaml")
        model = ROOT / "examples/quickstart/models/tiny-gpt2"
        if not model.exists():
            sys.exit("run `python examples/quickstart/prepare.py` first (the dry run hashes the model it would upload)")
        help_times = timed([exe, "--help"], env, args.runs)
        dry_times = timed([exe, "launch", spec, "--dry-run", "--json"], env, args.runs)
        result = {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "runs": args.runs,
            "help_median_s": round(statistics.median(help_times), 4),
            "dry_run_median_s": round(statistics.median(dry_times), 4),
            "help_heavy_imports": heavy_imports(["--help"], env),
            "dry_run_heavy_imports": heavy_imports(["launch", spec, "--dry-run", "--json"], env),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
