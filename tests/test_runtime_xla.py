"""The PyTorch/XLA (TPU) path's pieces that run without torch_xla: detection, one process per host (no torchrun),
precision, fixed shapes, the FSDPv2 key names. The recipe itself on XLA runs in the opt-in lane (tests/xla)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.errors import JobInputError
from cloudtune import entrypoint
from cloudtune.runtime.xla import torch_xla_installed, xla_device_type


def test_xla_needs_torch_xla_and_a_device(tmp_path: Path) -> None:
    chip = tmp_path / "accel0"
    chip.touch()
    none = (str(tmp_path / "absent"),)
    assert xla_device_type({"PJRT_DEVICE": "TPU"}, installed=False) is None  # PJRT_DEVICE alone changes nothing
    assert xla_device_type({"PJRT_DEVICE": "cpu"}, installed=True, device_files=none) == "CPU"
    assert xla_device_type({}, installed=True, device_files=(str(chip),)) == "TPU"
    assert xla_device_type({}, installed=True, device_files=none) is None
    assert xla_device_type({"PJRT_DEVICE": "TPU", "USE_TORCH_XLA": "0"}, installed=True) is None  # transformers' switch
    if not torch_xla_installed():
        assert xla_device_type({"PJRT_DEVICE": "TPU"}) is None


def _bare_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ppn: int) -> list[str]:
    for var in ("CLOUDTUNE_FS_ROOT", "CLOUD_ML_JOB_ID", "AIP_MODEL_DIR", "AZUREML_RUN_ID", "TORCHELASTIC_RUN_ID",
                "CLOUDTUNE_PROCESSES_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("x")
    return ["--job-json", json.dumps({"name": "t", "command": "true", "processes_per_node": ppn})]


def test_on_xla_one_process_per_host_runs_the_worker_without_torchrun(tmp_path, monkeypatch, capsys) -> None:
    argv = _bare_job(tmp_path, monkeypatch, ppn=4)
    monkeypatch.setenv("PJRT_DEVICE", "unset-me")
    monkeypatch.delenv("PJRT_DEVICE")  # restored (removed) after the test: announce_xla sets it
    monkeypatch.setattr(entrypoint, "xla_device_type", lambda: "TPU")
    monkeypatch.setattr(entrypoint, "launch_torchrun", lambda ctx, argv: pytest.fail("torchrun started on XLA"))
    ran = []
    monkeypatch.setattr(entrypoint, "run_worker", lambda ctx: ran.append(ctx.processes_per_node) or 0)
    assert entrypoint.main(argv) == 0
    assert ran == [4]
    assert "PyTorch/XLA on TPU: one process on this host drives all its devices (SPMD), no torchrun; " \
           "processes_per_node 4 is not used" in capsys.readouterr().out
    import os

    assert os.environ["PJRT_DEVICE"] == "TPU"


def test_without_xla_several_processes_still_go_through_torchrun(tmp_path, monkeypatch) -> None:
    argv = _bare_job(tmp_path, monkeypatch, ppn=2)
    monkeypatch.setattr(entrypoint, "xla_device_type", lambda: None)
    started = []
    monkeypatch.setattr(entrypoint, "launch_torchrun", lambda ctx, argv: started.append(ctx.world_size) or 0)
    monkeypatch.setattr(entrypoint, "run_worker", lambda ctx: pytest.fail("ran in-process"))
    assert entrypoint.main(argv) == 0 and started == [2]


def test_xla_precision() -> None:
    from cloudtune.train.xla import xla_precision

    assert xla_precision("auto", "TPU") == "bf16"
    assert xla_precision("auto", "CPU") == "fp32"
    assert xla_precision("fp32", "TPU") == "fp32" and xla_precision("bf16", "CPU") == "bf16"
    with pytest.raises(JobInputError, match="fp16 is not supported on PyTorch/XLA"):
        xla_precision("fp16", "TPU")


def test_device_precision_is_unchanged_without_xla() -> None:
    torch = pytest.importorskip("torch")
    from cloudtune.train.arguments import device_precision

    if xla_device_type() is not None or torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    assert device_precision("auto") == "fp32"


def test_fsdpv2_keys_lose_the_wrapper_parts() -> None:
    from cloudtune.train.xla import plain_key

    assert plain_key("_orig_module.model.layers.0._orig_module.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert plain_key("model.layers.1._orig_module._checkpoint_wrapped_module.self_attn.q_proj.weight") == \
        "model.layers.1.self_attn.q_proj.weight"
    assert plain_key("lm_head.weight") == "lm_head.weight"


def test_xla_training_kwargs_use_the_non_fused_optimizer_and_no_fsdp_for_ddp() -> None:
    from cloudtune.spec import TrainSpec
    from cloudtune.train.xla import xla_training_kwargs

    train = TrainSpec.model_validate({"task": "causal-lm", "model": "m", "data": {"train": "train"}})
    assert xla_training_kwargs(train, None) == {"optim": "adamw_torch"}


def test_collators_pad_to_a_fixed_length() -> None:
    pytest.importorskip("torch")
    from cloudtune.train.classification import ClassificationCollator
    from cloudtune.train.packing import CausalLMCollator

    rows = [{"input_ids": [5, 6, 7]}, {"input_ids": [5]}]
    assert CausalLMCollator(0)(rows)["input_ids"].shape == (2, 3)  # dynamic: the longest row
    fixed = CausalLMCollator(0, pad_to=16)(rows)
    assert fixed["input_ids"].shape == fixed["labels"].shape == fixed["attention_mask"].shape == (2, 16)
    assert int(fixed["attention_mask"].sum()) == 4 and int((fixed["labels"] != -100).sum()) == 4
    packed = CausalLMCollator(0, "sdpa", pad_to=8)([{"input_ids": [1, 2, 3], "seq_lens": [2, 1]}])
    assert packed["input_ids"].shape == (1, 8) and packed["attention_mask"].shape[-1] == 8
    labelled = [{"input_ids": [1, 2], "labels": 1}, {"input_ids": [3], "labels": 0}]
    assert ClassificationCollator(0, 12)(labelled)["input_ids"].shape == (2, 12)
    assert ClassificationCollator(0)(labelled)["input_ids"].shape == (2, 2)
