"""The job the launch benchmarks submit, and their dry-run timer: a `data_mb` MB JSONL train input, a small eval input, a hub-id model
(`salt` changes the data's bytes, so the content-addressed upload cannot skip it)."""

from __future__ import annotations

import subprocess
import sys
import time
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


def dry_runs(job: Path, env: dict[str, str], runs: int, provider: str, sdk_prefixes: tuple[str, ...],
             extra: tuple[str, ...] = ()) -> tuple[list[float], bool]:
    """Wall seconds of `runs` fresh `cloudtune launch JOB --provider PROVIDER --dry-run --json` processes, and
    whether any of them imported a module starting with one of `sdk_prefixes` (the SDKs must stay unimported)."""
    code = ("import sys; from cloudtune.cli import main\n"
            "try:\n    main()\nfinally:\n"
            f"    print('SDK', any(m.startswith({sdk_prefixes!r}) for m in sys.modules), file=sys.stderr)")
    cli = [sys.executable, "-c", code, "launch", str(job), "--provider", provider, "--dry-run", "--json", *extra]
    times: list[float] = []
    imported = False
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(cli, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode not in (0, None):
            raise SystemExit(out.stderr)
        imported |= "SDK True" in out.stderr
    return times, imported
