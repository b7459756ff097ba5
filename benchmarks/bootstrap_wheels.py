"""The stock-image bootstrap, measured: what the wheelhouse adds to the first upload and to job start, and that
a lock installs with `pip install --no-index` into a clean environment. Opt-in: it needs PyPI (run by hand,
not in CI).

1. Fetch every wheel of the shipped locks (SageMaker py312, Vertex py310) through `cloudtune.kit.bootstrap`,
   checking each sha256: the bytes a first launch uploads once per lock, and the fetch time.
2. Write a lock for this machine's interpreter with the same generator (`cloudtune.kit.lockgen`, torch held out
   at the installed version), stage its wheelhouse, create a clean venv with only torch in it (as a stock image
   has), then time `pip install --no-index --find-links <wheelhouse> cloudtune.whl[train]` (what the container
   runs at start) and import the recipe modules from that venv.

Usage: python benchmarks/bootstrap_wheels.py [--skip-shipped] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudtune.kit import lockgen
from cloudtune.kit.bootstrap import TARGETS, Lock, Target, Wheel, load_lock, stage_wheelhouse
from cloudtune.kit.wheel import cloudtune_wheel


def fetch_shipped(work: Path) -> dict[str, dict[str, float]]:
    out = {}
    for name in TARGETS:
        lock = load_lock(name)
        t0 = time.perf_counter()
        house = stage_wheelhouse(lock, work / name, work / "cache")
        out[name] = {"wheels": len(lock.wheels), "mb": round(lock.digest()[0] / 1e6, 1),
                     "fetch_s": round(time.perf_counter() - t0, 1),
                     "files": len(list(house.iterdir()))}
    return out


def host_target() -> Target:
    import torch

    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return Target("host", py, abi, ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
                  torch.__version__.split("+")[0])


def install_into_clean_venv(work: Path) -> dict[str, float]:
    target = host_target()
    data = lockgen.generate(target)
    lock = Lock("host", tuple(Wheel.from_json(w) for w in data["wheels"]))
    house = stage_wheelhouse(lock, work / "host-wheelhouse", work / "cache")
    wheel = cloudtune_wheel(work / "cloudtune-wheel")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={target.torch}"], check=True)  # the stock image's torch
    t0 = time.perf_counter()
    subprocess.run([*pip, "--no-index", "--find-links", str(house), f"{wheel.path}[train]"], check=True)
    install_s = time.perf_counter() - t0
    check = "import cloudtune.train.causal_lm, transformers, peft, accelerate, pyarrow; print(transformers.__version__)"
    done = subprocess.run([str(venv / "bin/python"), "-c", check], check=True, capture_output=True, text=True)
    return {"wheels": len(lock.wheels), "mb": round(lock.digest()[0] / 1e6, 1), "no_index_install_s": round(install_s, 1),
            "imports_ok": bool(done.stdout.strip())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-shipped", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cloudtune-bootstrap-bench-"))
    result = {"shipped_locks": {} if args.skip_shipped else fetch_shipped(work),
              "host_lock_clean_venv": install_into_clean_venv(work)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
