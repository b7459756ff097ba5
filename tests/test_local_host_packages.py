"""A local job on this machine's Python (`runtime: host`) whose options import a package cloudtune[train] does not
carry (DeepSpeed, flash-attn, bitsandbytes) is refused at plan time when this Python lacks it, naming the option
and the fix, instead of stopping after the model and data have loaded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloudtune.errors import UnsupportedSpec
from cloudtune.local.planning import CUDA_PACKAGES, host_has_packages, packages_of_options
from cloudtune.memory_check import local_cuda
from cloudtune.spec import JobSpec
from tests.test_local_e2e import write_job
from tests.tiny_models import make_tiny_gpt2


def _spec(train: dict) -> JobSpec:
    return JobSpec.model_validate({"name": "j", "inputs": {"train": "data"},
                                   "train": {"model": "gpt2", "data": {"train": "train"}, **train}})


@pytest.mark.parametrize("train, module, option", [
    ({"distributed": "deepspeed-zero2"}, "deepspeed", "train.distributed deepspeed-zero2"),
    ({"distributed": "deepspeed-zero3"}, "deepspeed", "train.distributed deepspeed-zero3"),
    ({"attn_implementation": "flash_attention_2"}, "flash_attn", "train.attn_implementation flash_attention_2"),
    ({"lora": {"quantize": "4bit"}}, "bitsandbytes", "train.lora.quantize 4bit"),
    ({"hyperparameters": {"optimizer": "paged_adamw_8bit"}}, "bitsandbytes",
     "train.hyperparameters.optimizer paged_adamw_8bit"),
])
def test_each_option_that_imports_a_package_names_it(train: dict, module: str, option: str) -> None:
    [(found, _, named, _)] = packages_of_options(_spec(train))
    assert (found, named) == (module, option)
    if module in CUDA_PACKAGES and not local_cuda():  # the option itself is refused first: it needs a CUDA GPU
        host_has_packages(_spec(train))
    elif importlib.util.find_spec(module) is None:
        with pytest.raises(UnsupportedSpec, match=f"^{option}: the job runs on this machine's Python") as err:
            host_has_packages(_spec(train))
        assert "pip install" in (err.value.fix or "")


def test_options_of_cloudtunes_own_dependencies_need_nothing_more() -> None:
    assert packages_of_options(_spec({"attn_implementation": "sdpa", "distributed": "ddp", "lora": {"r": 4},
                                      "hyperparameters": {"optimizer": "adafactor"}})) == []


def _dry_run(job: Path, home: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", "launch", str(job), "--provider", "local",
                           "--dry-run"], env=env, capture_output=True, text=True, timeout=300, cwd=job.parent)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="this Python has deepspeed")
def test_the_dry_run_refuses_a_deepspeed_job_this_python_cannot_run(tmp_path: Path) -> None:
    job = write_job(tmp_path, make_tiny_gpt2(tmp_path / "tiny"), resources={"processes_per_node": 2})
    spec = yaml.safe_load(job.read_text())
    spec["train"]["distributed"] = "deepspeed-zero2"
    job.write_text(yaml.safe_dump(spec))
    refused = _dry_run(job, tmp_path / "home")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert "train.distributed deepspeed-zero2: the job runs on this machine's Python, which has no deepspeed" in lines[0]
    assert "Traceback" not in refused.stderr and "pip install deepspeed" in refused.stderr
    assert not (tmp_path / "home" / "jobs").exists()  # a dry run writes nothing
    fake = tmp_path / "site"  # an importable deepspeed on this Python's path: the plan goes on
    (fake / "deepspeed").mkdir(parents=True)
    (fake / "deepspeed" / "__init__.py").write_text("")
    planned = _dry_run(job, tmp_path / "home", str(fake))
    assert planned.returncode == 0, planned.stderr[-3000:]
