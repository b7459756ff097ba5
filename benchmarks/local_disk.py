"""Disk taken by N tiny local jobs: each gets its own copy of the quickstart's model (14 MB) and data.

    python benchmarks/local_disk.py --workdir DIR [--jobs 15]

DIR's file system is the one measured (the inputs, the jobs dir and TMPDIR all go under it; put it on btrfs or
XFS to see copy-on-write clones). Prints one JSON object: `du_jobs_kb` (what `du` adds up: it counts a block
shared by clones once per file), `filesystem_used_delta_kb` (the blocks the file system really gave out, from
statvfs before and after), `tmp_code_entries` (files and dirs left under TMPDIR by the jobs' code copies), and,
after `cloudtune clean --all`, `du_jobs_after_clean_kb`. Runs against whichever cloudtune is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples/quickstart"


def used_kb(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def du_kb(path: Path) -> int:
    if not path.exists():
        return 0
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def prepare(root: Path) -> Path:
    src = root / "src"
    if not (QUICKSTART / "models/tiny-gpt2").is_dir():
        sys.exit(f"build the quickstart model first: python {QUICKSTART / 'prepare.py'}")
    shutil.copytree(QUICKSTART / "models/tiny-gpt2", src / "model", dirs_exist_ok=True)
    shutil.copytree(QUICKSTART / "data", src / "data", dirs_exist_ok=True)
    (src / "code").mkdir(exist_ok=True)
    (src / "code/run.sh").write_text('cp "$CLOUDTUNE_INPUT_MODEL/config.json" "$CLOUDTUNE_MODEL_DIR/"\n')
    spec = {"name": "tiny", "command": "bash run.sh", "code": "code",
            "inputs": {"model": "model", "train": "data/train.jsonl", "eval": "data/eval.jsonl"},
            "providers": {"local": {"jobs_dir": str(root / "jobs")}}}
    (src / "job.yaml").write_text(json.dumps(spec))
    return src / "job.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=15)
    args = parser.parse_args()
    root = args.workdir.resolve()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ.update(CLOUDTUNE_HOME=str(root / "home"), TMPDIR=str(root / "tmp"))
    spec = prepare(root)
    from cloudtune import api

    before = used_kb(root)
    for _ in range(args.jobs):
        job = api.launch(spec)
        if job.wait(timeout=120) != "succeeded":
            sys.exit("\n".join(job.logs()))
    report = {"jobs": args.jobs, "du_jobs_kb": du_kb(root / "jobs"), "filesystem_used_delta_kb": used_kb(root) - before,
              "tmp_code_entries": sum(1 for _ in (root / "tmp").rglob("*")),
              "inputs_per_job_kb": du_kb(root / "src/model") + du_kb(root / "src/data")}
    clean = subprocess.run([sys.executable, "-m", "cloudtune.cli", "clean", "--all"], capture_output=True, text=True)
    if clean.returncode == 0:
        report["du_jobs_after_clean_kb"] = du_kb(root / "jobs")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
