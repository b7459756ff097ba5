"""Preemption drill: kill a local job's training process three times, let `retries` bring it back, and compare
the final weights with an uninterrupted run of the same seed.

    python benchmarks/preemption_drill.py [--seed 0] [--max-steps 90] [--every-steps 3] [--workdir DIR]

What it does, on CPU, through the public API (`cloudtune.api.launch`, local launcher, SageMaker contract):

1. launches a job with `retries: 3` on a tiny GPT-2 (built from a config, never downloaded);
2. picks three kill steps with `random.Random(seed)` and the signal order (SIGTERM twice, SIGKILL once) the same way;
3. for each kill: waits (bounded) until the current attempt has written a complete checkpoint at or past the kill step
   and newer than the one it resumed from, then signals the node's `cloudtune-run` process (the supervisor's child,
   found through /proc/<pid>/task/<pid>/children; the supervisor pid is in `<job_dir>/state.json`);
4. waits for the job to succeed, runs the same spec once more without kills, and compares `model.safetensors`.

Prints one JSON object: the kill plan and what happened at each kill, the resume steps, the optimizer step counts
of both runs and the max abs weight difference (target 0: the recipe restores data order and RNG state).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIGNALS = ("SIGTERM", "SIGTERM", "SIGKILL")
SIGTERM_LINE = re.compile(r"\[cloudtune\] SIGTERM received: checkpoint saved at step (\d+), exiting")
RESUME_LINE = re.compile(r"\[cloudtune\] resuming from checkpoint \S+ \(step (\d+)\)")
SENTENCES = [
    "the kettle sings when the water is hot",
    "a sail fills with wind and the boat moves north past the harbour light",
    "roast the beans until the first crack",
    "the river runs to the sea in spring and the fish swim up against it",
]


def plan_kills(seed: int, max_steps: int, *, first: int = 6, margin: int = 15, gap: int = 10) -> list[tuple[int, str]]:
    """Three (step, signal) pairs: distinct steps at least `gap` apart in [first, max_steps - margin); seeded."""
    rng = random.Random(seed)
    candidates = range(first, max_steps - margin)
    if len(candidates) < 2 * gap + 1:
        raise ValueError(f"max_steps={max_steps} leaves no room for three kills {gap} steps apart")
    while True:
        steps = sorted(rng.sample(candidates, 3))
        if all(b - a >= gap for a, b in zip(steps, steps[1:])):
            break
    order = list(SIGNALS)
    rng.shuffle(order)
    return list(zip(steps, order))


def write_spec(workdir: Path, model: Path, *, max_steps: int, every_steps: int, seed: int, retries: int) -> Path:
    import yaml

    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": f"{SENTENCES[i % 4]} {i}"}) + "\n" for i in range(64)))
    spec = {
        "name": "drill",
        "inputs": {"train": str(data / "train.jsonl")},
        "train": {
            "model": str(model),
            "data": {"train": "train", "eval": None},
            # 64 examples / batch 4 = 16 steps an epoch: the kills and resumes cross epoch boundaries
            "hyperparameters": {"epochs": 100, "max_steps": max_steps, "learning_rate": 3e-3, "batch_size": 4,
                                "max_seq_len": 32, "seed": seed},
        },
        "checkpoint": {"every_steps": every_steps, "keep": 2},
        "retries": retries,
        "providers": {"local": {"emulate": "aws"}},
    }
    path = workdir / f"job-{retries}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait(predicate: Any, timeout: float, what: str, job: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if job is not None and job.status() in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"the job ended ({job.status()}) while waiting for {what}:\n" + "\n".join(job.logs()))
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _complete_steps(ckpt_dir: Path) -> list[int]:
    from cloudtune.train.checkpoints import list_checkpoints, verify

    return [c.step for c in list_checkpoints(ckpt_dir) if verify(c.path) is None]


def _weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def run_drill(workdir: Path, *, seed: int = 0, max_steps: int = 90, every_steps: int = 3,
              wait_s: float = 120.0, model: Path | None = None) -> dict[str, Any]:
    """Run the drill under `workdir` (CLOUDTUNE_HOME is set to `workdir/home` for this process). Returns the report."""
    from cloudtune import api
    from cloudtune.local.statefile import read_state
    from tests.tiny_models import make_tiny_gpt2

    workdir = Path(workdir)
    os.environ["CLOUDTUNE_HOME"] = str(workdir / "home")
    model = model or make_tiny_gpt2(workdir / "tiny-gpt2")
    kills = plan_kills(seed, max_steps)
    t0 = time.perf_counter()

    job = api.launch(write_spec(workdir, model, max_steps=max_steps, every_steps=every_steps, seed=seed, retries=3))
    job_dir = workdir / "home" / "jobs" / job.job_id
    ckpt_dir = job_dir / "hosts/algo-1/opt/ml/checkpoints"
    supervisor = int(_wait(lambda: read_state(job_dir).get("supervisor_pid"), wait_s, "the supervisor"))
    events: list[dict[str, Any]] = []
    killed: set[int] = set()
    resumed_from = 0
    try:
        for attempt, (target, signame) in enumerate(kills):
            # this attempt's cloudtune-run process (a fresh child after each restart)
            pid = _wait(lambda: [p for p in _children(supervisor) if p not in killed], wait_s,
                        f"attempt {attempt + 1}'s cloudtune-run process", job)[0]
            seen = _wait(lambda: [s for s in _complete_steps(ckpt_dir) if s > resumed_from and s >= target],
                         wait_s, f"a checkpoint at or past step {target} (attempt {attempt + 1})", job)
            os.kill(pid, getattr(signal, signame))
            killed.add(pid)
            event: dict[str, Any] = {"attempt": attempt + 1, "signal": signame, "target_step": target,
                                     "newest_checkpoint_when_signalled": max(seen), "pid": pid}
            _wait(lambda: int(read_state(job_dir).get("attempt", 0)) > attempt, wait_s, f"restart {attempt + 1}", job)
            if signame == "SIGTERM":  # the supervisor has drained the old attempt's output before restarting
                saved = [int(s) for s in SIGTERM_LINE.findall("\n".join(job.logs()))]
                event["sigterm_checkpoint_step"] = saved[-1] if saved else None
            resumed_from = max(_complete_steps(ckpt_dir) or [0])
            event["resume_from_step"] = resumed_from
            events.append(event)
        state = job.wait(timeout=wait_s * 3)
    finally:
        if job.status() in ("pending", "running"):
            job.cancel()
    drilled_s = time.perf_counter() - t0
    log = "\n".join(job.logs())
    if state != "succeeded":
        raise RuntimeError(f"the drilled job ended {state}:\n{log}")
    drilled_metrics = json.loads((Path(job.model_uri) / "metrics.json").read_text())

    t1 = time.perf_counter()
    ref = api.launch(write_spec(workdir, model, max_steps=max_steps, every_steps=every_steps, seed=seed, retries=0))
    if ref.wait(timeout=wait_s * 3) != "succeeded":
        raise RuntimeError("the reference job failed:\n" + "\n".join(ref.logs()))
    reference_s = time.perf_counter() - t1
    ref_metrics = json.loads((Path(ref.model_uri) / "metrics.json").read_text())

    return {
        "seed": seed,
        "max_steps": max_steps,
        "checkpoint_every_steps": every_steps,
        "kill_plan": [{"step": s, "signal": n} for s, n in kills],
        "kills": events,
        "sigterm_lines": SIGTERM_LINE.findall(log),
        "resumed_from_steps": [int(s) for s in RESUME_LINE.findall(log)],
        "attempts": int(read_state(job_dir).get("attempt", 0)) + 1,
        "drilled_global_step": int(drilled_metrics["global_step"]),
        "reference_global_step": int(ref_metrics["global_step"]),
        "max_abs_diff": max_abs_diff(_weights(Path(job.model_uri)), _weights(Path(ref.model_uri))),
        "drilled_wall_s": round(drilled_s, 2),
        "reference_wall_s": round(reference_s, 2),
        "job_log": str(job_dir / "job.log"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill steps, the signal order and training")
    parser.add_argument("--max-steps", type=int, default=90)
    parser.add_argument("--every-steps", type=int, default=3, help="checkpoint.every_steps")
    parser.add_argument("--workdir", type=Path, help="keep the jobs here (default: a temporary dir, removed)")
    args = parser.parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run_drill(args.workdir, seed=args.seed, max_steps=args.max_steps, every_steps=args.every_steps)
    else:
        with tempfile.TemporaryDirectory(prefix="cloudtune-drill-") as tmp:
            report = run_drill(Path(tmp), seed=args.seed, max_steps=args.max_steps, every_steps=args.every_steps)
            report.pop("job_log")
    print(json.dumps(report, indent=2))
    ok = report["max_abs_diff"] == 0.0 and report["drilled_global_step"] == report["reference_global_step"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
