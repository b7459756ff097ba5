"""What one image-runtime lane (`providers.local.runtime: image`) costs per stock target, and whether the target's
software runs the tiny recipes.

For each emulated cloud (aws, gcp, azure), with the target a `train:` job runs there (the stock image, or for
Vertex AI cloudtune's own GPU image: cloudtune.kit.bootstrap.job_target):
1. the wheelhouse: the lock's wheels fetched into $CLOUDTUNE_HOME/wheels (once) and staged;
2. the image env: the target's Python (pyenv), torch from PyPI (a CUDA build with its nvidia-* wheels, downloaded
   once per Python + torch) and the lock installed with --no-index (cloudtune.local.imageenv), built once;
3. the tiny causal-LM and sequence-classification recipes (tests/tiny_models.py's tiny GPT-2, 4 steps, CPU)
   launched through `cloudtune.launch` with runtime: image: each node gets a fresh env over the image and starts
   through the cloud's own start path.

Prints per target: bytes downloaded (lock, torch), the image env's disk, the build's seconds (from its marker file
when it was already cached), and each run's outcome and seconds (launch to end; the job's own start to end).

Usage: CLOUDTUNE_HOME=DIR python benchmarks/image_lanes.py [aws] [gcp] [azure] [--json]
Needs: network to PyPI on the first run of a target (later runs are offline), pyenv's Python of each target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if path.exists() else 0


def _run(emulate: str, task: str, work: Path, model: Path) -> dict[str, Any]:
    import yaml

    from cloudtune import api
    from cloudtune.local.statefile import read_state

    rows = [{"text": f"the grinder broke {i}", "label": ["shipping", "equipment"][i % 2]}
            if task == "seq-classification" else {"text": f"hello world number {i}"} for i in range(32)]
    (work / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": f"lane-{emulate}-{task}", "inputs": {"train": f"{task}.jsonl"},
            "train": {"model": str(model), "task": task,
                      "hyperparameters": {"epochs": 1, "max_steps": 4, "batch_size": 4, "max_seq_len": 32}},
            "resources": {"accelerator": "cpu", "max_runtime": 3600},
            "providers": {"local": {"emulate": emulate, "runtime": "image"}}}
    (work / f"{task}.yaml").write_text(yaml.safe_dump(spec))
    t0 = time.monotonic()
    job = api.launch(work / f"{task}.yaml")
    state = job.wait(timeout=3600)
    wall = time.monotonic() - t0
    job_dir = Path(job.ref().native_id)
    st = read_state(job_dir)
    return {"task": task, "state": state, "seconds": round(wall, 1),
            "job_seconds": round(float(st.get("ended_at", 0)) - float(st.get("started_at", 0)), 1),
            "failure": st.get("failure_reason"), "job_dir": str(job_dir)}


def lane(emulate: str, home: Path, model: Path, work: Path) -> dict[str, Any]:
    from cloudtune.errors import CloudtuneError
    from cloudtune.kit import staging
    from cloudtune.kit.bootstrap import load_lock
    from cloudtune.local.imageenv import MARKER, ensure_image_env, env_path, image_target, torch_dir
    from cloudtune.kit.bootstrap import job_target

    target = job_target(emulate, train=True)  # the image each cloud runs the recipes on (no `image:` in the spec)
    it = image_target(target)
    up = staging.wheelhouse(target, home, str(home / "wheelhouses"))
    t0 = time.monotonic()
    staging.stage(up)
    stage_s = time.monotonic() - t0
    cached = (env_path(home, it) / MARKER).is_file()
    out: dict[str, Any] = {"emulate": emulate, "target": target, "python": it.python, "torch": it.torch,
                           "cached_before": cached, "lock_bytes": load_lock(target).digest()[0],
                           "wheelhouse_stage_s": round(stage_s, 1), "runs": []}
    t0 = time.monotonic()
    try:
        ensure_image_env(home, it, Path(up.source), lambda line: print(f"[{emulate}] {line}", file=sys.stderr))
    except CloudtuneError as exc:  # the target's software cannot be installed: no run can start
        out.update(build_error=exc.message, build_s=round(time.monotonic() - t0, 1),
                   torch_download_bytes=_du(torch_dir(home, it)), image_env_bytes=_du(env_path(home, it)))
        return out
    record = json.loads((env_path(home, it) / MARKER).read_text())
    out.update(torch_download_bytes=_du(torch_dir(home, it)), image_env_bytes=record["env_bytes"],
               build_s=record["seconds"], build_steps_s=record["steps_s"])
    out["runs"] = [_run(emulate, task, work, model) for task in ("causal-lm", "seq-classification")]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=["aws", "gcp", "azure"], choices=["aws", "gcp", "azure"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from cloudtune.settings import cloudtune_home
    from tests.tiny_models import make_tiny_gpt2

    home = cloudtune_home()
    work = Path(tempfile.mkdtemp(prefix="image-lanes-"))
    model = make_tiny_gpt2(work / "tiny-gpt2")
    results = [lane(e, home, model, work) for e in args.targets]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['emulate']} ({r['target']}: Python {r['python']}, torch {r['torch']}): lock {r['lock_bytes'] / 1e6:.0f} MB, "
              f"torch download {r['torch_download_bytes'] / 1e9:.2f} GB, image env {r['image_env_bytes'] / 1e9:.2f} GB on "
              f"disk, built in {r['build_s']:.0f} s {r.get('build_steps_s', '')}"
              + (" (cached before)" if r["cached_before"] else "")
              + (f"; BUILD FAILED: {r['build_error']}" if r.get("build_error") else ""))
        for run in r["runs"]:
            print(f"  {run['task']}: {run['state']} in {run['seconds']:.0f} s (job {run['job_seconds']:.0f} s)"
                  + (f": {run['failure']}" if run["failure"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
