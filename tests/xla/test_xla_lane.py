"""The PyTorch/XLA lane: the built-in causal-LM recipe on XLA's CPU device (PJRT_DEVICE=CPU), compared with the
plain CPU path of the same torch and seed. Opt-in: run by `bash tests/xla/setup.sh` (its own venv with torch 2.9.0 +
torch_xla 2.9.0); skipped where torch_xla is not installed (the main suite).

What it proves: the recipe trains through PyTorch/XLA in one process (plain, LoRA, and SPMD FSDPv2 over two virtual
devices), with the non-fused optimizer, fixed shapes (a bounded number of graph compilations), checkpoints and
resume after a SIGTERM, and writes a model that loads with from_pretrained on CPU; and that its numbers match the
plain CPU run. What it cannot prove (libtpu, TPU topology, multi-host, HBM fit, bf16 on TPU, speed): docs/tpu.md.

Every run is a subprocess (tests/xla/xla_run.py): torch_xla's runtime and SPMD mode are per process. The figures of
each run are printed (`-s`) and written to $CLOUDTUNE_XLA_REPORT (default: the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch_xla")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
from tests.tiny_models import make_tiny_llama

TEXTS = [f"the boat number {i % 4} sails north at dawn with {i % 3} crew" for i in range(24)]
EVAL = [f"the boat number {i % 4} sails north at dawn with {(i + 1) % 3} crew" for i in range(8)]
HP = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 8, "max_seq_len": 32, "seed": 7}
RUN_TIMEOUT_S = 900
REPORT: dict[str, Any] = {}


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xla-lane")
    data = root / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (data / "eval.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in EVAL))
    yield {"root": root, "model": make_tiny_llama(root / "tiny-llama"), "data": data}
    report = Path(os.environ.get("CLOUDTUNE_XLA_REPORT") or root / "report.json")
    report.write_text(json.dumps(REPORT, indent=2, sort_keys=True) + "\n")
    print(f"\nxla lane report: {report}\n{json.dumps(REPORT, indent=2, sort_keys=True)}")


def run(lane: dict[str, Path], name: str, mode: str, spec: dict[str, Any] | None = None, *,
        checkpoint: dict[str, int] | None = None, sigterm_at: int = 0, work: Path | None = None) -> dict[str, Any]:
    """One recipe run in a subprocess: mode `xla` (PJRT_DEVICE=CPU), `xla2` (two virtual devices) or `cpu`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_DEVICE", "CPU_NUM_DEVICES", "USE_TORCH_XLA", "XLA_FLAGS")}
    env |= {"xla": {"PJRT_DEVICE": "CPU"}, "xla2": {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"},
            "cpu": {"USE_TORCH_XLA": "0"}}[mode]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    work = work or lane["root"] / name
    train = {"task": "causal-lm", "data": {"train": "train", "eval": "eval"}, "hyperparameters": HP} | (spec or {})
    cmd = [sys.executable, str(ROOT / "tests/xla/xla_run.py"), "--work", str(work), "--model", str(lane["model"]),
           "--data", str(lane["data"]), "--spec", json.dumps(train),
           "--checkpoint", json.dumps(checkpoint or {"every_steps": 100, "keep": 2})]
    if sigterm_at:
        cmd += ["--sigterm-at", str(sigterm_at)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("XLA-LANE-RESULT ")]
    assert proc.returncode == 0 and lines, f"{name} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    result = json.loads(lines[-1].partition(" ")[2]) | {"model_dir": str(work / "model"), "log": proc.stdout}
    m = result["metrics"]
    REPORT[name] = {k: result.get(k) for k in ("exit", "seconds", "compilations", "devices", "spmd", "xla_device")} | {
        k: m.get(k) for k in ("eval_loss_before", "eval_loss_after", "train_loss", "global_step")}
    return result


def weights(model_dir: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def max_weight_diff(a: str, b: str) -> float:
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb), f"different tensors: {sorted(set(wa) ^ set(wb))[:5]}"
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def reloads_on_cpu(model_dir: str) -> None:
    """from_pretrained on the CPU: every weight found (nothing missing, nothing unexpected), finite logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True, device_map="cpu")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.device.type == "cpu" and torch.isfinite(logits).all()


def assert_learned(result: dict[str, Any]) -> None:
    m = result["metrics"]
    assert m["eval_loss_after"] < m["eval_loss_before"] - 0.1, m


@pytest.fixture(scope="module")
def cpu_full(lane) -> dict[str, Any]:
    return run(lane, "cpu_full", "cpu")


def test_plain_xla_run_matches_the_cpu_run(lane, cpu_full) -> None:
    xla = run(lane, "xla_full", "xla")
    assert xla["torch_xla_imported"] and xla["xla_device"] == "CPU" and not xla["spmd"]
    assert not cpu_full["torch_xla_imported"] and cpu_full["xla_device"] is None
    assert "PyTorch/XLA on CPU: precision fp32, batches padded to max_seq_len=32" in xla["log"]
    assert_learned(xla)
    assert_learned(cpu_full)
    loss_diff = max(abs(xla["metrics"][k] - cpu_full["metrics"][k]) for k in ("eval_loss_before", "eval_loss_after", "train_loss"))
    weight_diff = max_weight_diff(xla["model_dir"], cpu_full["model_dir"])
    REPORT["xla_full"] |= {"max_loss_diff_vs_cpu": loss_diff, "max_weight_diff_vs_cpu": weight_diff}
    assert loss_diff < 1e-3 and weight_diff < 1e-3, (loss_diff, weight_diff)
    # fixed shapes: a fixed set of graphs (training step, evaluation, optimizer state set-up, loss reductions),
    # compiled once: twice the steps compile nothing more
    assert 0 < xla["compilations"] <= 20, xla["compilations"]
    longer = run(lane, "xla_longer", "xla", {"hyperparameters": HP | {"epochs": 4}})
    assert longer["metrics"]["global_step"] == 2 * xla["metrics"]["global_step"]
    assert longer["compilations"] == xla["compilations"], (longer["compilations"], xla["compilations"])
    reloads_on_cpu(xla["model_dir"])


def test_lora_on_xla_matches_the_cpu_run(lane) -> None:
    # dropout 0: dropout masks come from XLA's RNG on XLA and torch's on CPU, so only runs without it can match
    lora = {"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "merge": True}, "hyperparameters": HP | {"learning_rate": 2e-2}}
    cpu = run(lane, "cpu_lora", "cpu", lora)
    xla = run(lane, "xla_lora", "xla", lora)
    assert_learned(xla)
    loss_diff = max(abs(xla["metrics"][k] - cpu["metrics"][k]) for k in ("eval_loss_before", "eval_loss_after", "train_loss"))
    weight_diff = max_weight_diff(xla["model_dir"], cpu["model_dir"])
    REPORT["xla_lora"] |= {"max_loss_diff_vs_cpu": loss_diff, "max_weight_diff_vs_cpu": weight_diff}
    assert loss_diff < 1e-3 and weight_diff < 1e-3, (loss_diff, weight_diff)
    assert (Path(xla["model_dir"]) / "adapter" / "adapter_config.json").is_file()
    reloads_on_cpu(xla["model_dir"])


def test_fsdpv2_on_two_virtual_devices_matches_the_cpu_run(lane, cpu_full) -> None:
    xla = run(lane, "xla_fsdpv2", "xla2", {"distributed": "fsdp"})
    assert xla["spmd"] and xla["devices"] == 2, xla
    assert "FSDPv2 (SPMD) over the host's devices" in xla["log"]
    assert_learned(xla)
    loss_diff = max(abs(xla["metrics"][k] - cpu_full["metrics"][k]) for k in ("eval_loss_before", "eval_loss_after", "train_loss"))
    weight_diff = max_weight_diff(xla["model_dir"], cpu_full["model_dir"])
    REPORT["xla_fsdpv2"] |= {"max_loss_diff_vs_cpu": loss_diff, "max_weight_diff_vs_cpu": weight_diff}
    assert loss_diff < 1e-3 and weight_diff < 1e-3, (loss_diff, weight_diff)
    assert not any("_orig_module" in k for k in weights(xla["model_dir"]))
    assert (Path(xla["model_dir"]) / "config.json").is_file()
    reloads_on_cpu(xla["model_dir"])


def test_sigterm_checkpoint_and_resume_on_xla_ends_like_an_uninterrupted_run(lane) -> None:
    spec = {"hyperparameters": HP | {"max_steps": 6}}
    checkpoint = {"every_steps": 100, "keep": 2}
    whole = run(lane, "xla_whole", "xla", spec, checkpoint=checkpoint)
    work = lane["root"] / "xla_preempted"
    first = run(lane, "xla_preempted", "xla", spec, checkpoint=checkpoint, sigterm_at=3, work=work)
    assert first["exit"] == 143 and "SIGTERM received: checkpoint saved at step 3" in first["log"]
    ckpt = work / "checkpoints" / "checkpoint-3"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file(), sorted(os.listdir(work / "checkpoints"))
    reloads_on_cpu(str(ckpt))
    second = run(lane, "xla_resumed", "xla", spec, checkpoint=checkpoint, work=work)
    assert "resuming from checkpoint" in second["log"] and second["metrics"]["global_step"] == 6
    diff = max_weight_diff(second["model_dir"], whole["model_dir"])
    REPORT["xla_resumed"] |= {"max_weight_diff_vs_uninterrupted": diff}
    assert diff < 1e-4, diff
