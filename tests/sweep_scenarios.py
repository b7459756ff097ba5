"""The cloud sweep scenarios shared by the SageMaker, Vertex AI and Azure ML sweep-plan tests, and the golden files'
normal form (tests/golden/<provider>/sweep-<scenario>.json|yaml).

Each scenario is a job spec with a `sweep:`; `inputs` and the settings are the provider's own (each test module
passes its remote inputs). The multi-node scenario's trials are 2 nodes x 8 GPUs each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
LORA_TRAIN = {"model": "gpt2", "lora": {}, "data": {"eval": "eval"}, "hyperparameters": {"eval_every": 50}}
FULL_TRAIN = {"model": "meta-llama/Llama-3.2-1B", "data": {"eval": "eval"}, "hyperparameters": {"eval_every": 100}}


def sweeps(base: Path, inputs: dict[str, str], accel: dict[str, str]) -> dict[str, dict[str, Any]]:
    """scenario -> spec data. `accel`: the provider's accelerator for `single` and `multi_node` (catalog names)."""
    return {
        "lora-bayesian": {
            "name": "sft-lora-sweep", "resources": {"accelerator": accel["single"], "max_runtime": "2h"},
            "inputs": inputs, "train": LORA_TRAIN,
            "sweep": {"parameters": {"learning_rate": "auto", "lora.r": {"choice": [8, 16, 32]},
                                     "batch_size": {"int": [4, 16]}},
                      "max_trials": 12, "parallel_trials": 3}},
        "multi-node-2x8-random": {
            "name": "llama-sweep", "resources": {"accelerator": accel["multi_node"], "nodes": 2, "max_runtime": "6h"},
            "inputs": inputs, "train": FULL_TRAIN,
            "sweep": {"parameters": {"learning_rate": {"loguniform": [1e-6, 1e-4]},
                                     "weight_decay": {"uniform": [0.0, 0.1]},
                                     "gradient_accumulation_steps": {"choice": [1, 2, 4]}},
                      "algorithm": "random", "max_trials": 8, "parallel_trials": 2, "early_stopping": "off",
                      "max_failed_trials": 0}},
        "grid": {
            "name": "lora-grid", "resources": {"accelerator": accel["single"]}, "inputs": inputs, "train": LORA_TRAIN,
            "sweep": {"parameters": {"lora.r": {"choice": [8, 16]}, "lora.dropout": {"choice": [0.0, 0.1]},
                                     "batch_size": {"int": [4, 5]}},
                      "algorithm": "grid", "max_trials": 8, "parallel_trials": 4}},
        "command-custom-image": {
            "name": "cmd-sweep", "image": accel["image"], "resources": {"accelerator": accel["single"]},
            "inputs": {"data": inputs["train"]}, "command": "python train.py --epochs 1", "code": str(base / "src"),
            "sweep": {"parameters": {"lr": {"loguniform": [1e-5, 1e-3]}, "optimizer": {"choice": ["adamw", "sgd"]},
                                     "warmup": {"uniform": [0.0, 0.2]}},
                      "objective": {"metric": "val_accuracy", "goal": "maximize"}, "algorithm": "random",
                      "max_trials": 6, "parallel_trials": 2}},
    }


def normalise(plan: Any, tmp: Path) -> dict[str, Any]:
    """What a golden sweep file holds: the native request, the job name, cost and notes, with the code bundle's hash
    (it carries a wheel of the running cloudtune) and the temp dir replaced."""
    code = next(u for u in plan.uploads if "/bundles/" in u.destination or "/code/" in u.destination)
    text = json.dumps({"job_name": plan.job_name, "request": plan.request, "instance_type": plan.instance_type,
                       "instance_count": plan.instance_count, "estimated_usd_per_hour": plan.estimated_usd_per_hour,
                       "notes": list(plan.notes)}, indent=2)
    return json.loads(text.replace(code.sha256, "<bundle-sha256>").replace(code.sha256[:16], "<bundle-sha16>")
                      .replace(str(tmp), "<tmp>"))


def assert_portable(plan: Any, tmp: Path) -> None:
    """No absolute local path in the request: neither the temp dir the spec lives in nor the home dir."""
    text = json.dumps(plan.request)
    assert str(tmp) not in text and str(Path.home()) not in text
