"""One run of a built-in recipe in this process, for the PyTorch/XLA lane; prints one `XLA-LANE-RESULT {json}` line.

    python tests/xla/xla_run.py --work DIR --model DIR --data DIR --spec JSON [--checkpoint JSON] [--sigterm-at N]

The device is chosen by the environment, as in a container: PJRT_DEVICE=CPU (and CPU_NUM_DEVICES=N for SPMD over
N virtual devices) runs the XLA path; USE_TORCH_XLA=0 runs the plain CPU path with the same torch. `--sigterm-at N`
sends this process SIGTERM during training step N (a preemption): the recipe checkpoints and exits 143.
The result holds the recipe's metrics, its exit code, the seconds it took and, on XLA, the number of graph
compilations (torch_xla.debug.metrics CompileTime) and the devices of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--checkpoint", default="{}")
    parser.add_argument("--sigterm-at", type=int, default=0)
    ns = parser.parse_args()

    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.runtime.xla import xla_device_type
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train import run_recipe

    work, data = Path(ns.work), Path(ns.data)
    inputs = {"train": data / "train.jsonl", "eval": data / "eval.jsonl"}
    ctx = RuntimeContext.single_process(work, inputs, job_name="xla-lane", provider="bare")
    for d in (ctx.model_dir, ctx.checkpoint_dir, ctx.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    spec = json.loads(ns.spec) | {"model": ns.model}
    train = TrainSpec.model_validate(spec)
    checkpoint = CheckpointSpec.model_validate(json.loads(ns.checkpoint))
    if ns.sigterm_at:
        from transformers import Trainer

        original = Trainer.training_step
        calls = {"n": 0}

        def step_then_sigterm(self, *args, **kwargs):  # the spot reclaim arrives mid-step
            calls["n"] += 1
            if calls["n"] == ns.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, *args, **kwargs)

        Trainer.training_step = step_then_sigterm

    start = time.perf_counter()
    code, metrics = 0, {}
    try:
        metrics = run_recipe(ctx, train, checkpoint)
    except SystemExit as exc:
        code = int(exc.code or 0)
    result = {"exit": code, "metrics": metrics, "seconds": round(time.perf_counter() - start, 2),
              "xla_device": xla_device_type(), "torch_xla_imported": "torch_xla" in sys.modules}
    if "torch_xla" in sys.modules:
        import torch_xla.debug.metrics as met
        import torch_xla.runtime as xr

        compile_time = met.metric_data("CompileTime")
        result["compilations"] = int(compile_time[0]) if compile_time else 0
        result["devices"] = int(xr.global_runtime_device_count())
        result["spmd"] = bool(xr.is_spmd())
    print("XLA-LANE-RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
