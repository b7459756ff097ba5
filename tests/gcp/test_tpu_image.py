"""`cloudtune launch` of a TPU spec with `--provider gcp --dry-run` (the real CLI, offline): the container is one that
carries PyTorch/XLA -- the image containers/tpu builds (torch and torch_xla 2.9.0, what the XLA lane tests), at the
Artifact Registry path docs/providers/gcp.md pushes it to, by default; another PyTorch/XLA image when `image:` names it --
and the job runs one process per TPU host."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gcp.conftest import BUCKET, PROJECT, REGION

pytest.importorskip("cloudtune_gcp")
TPU_IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/cloudtune/cloudtune-tpu:0.1.0"  # docs/providers/gcp.md: Artifact Registry


def _dry_run(tmp_path: Path, *extra: str) -> tuple[str, dict]:
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n')
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""name: tpu-sft
train: {{task: causal-lm, model: meta-llama/Llama-3.2-1B, data: {{train: train}}, distributed: fsdp}}
inputs: {{train: gs://{BUCKET}/data/train.jsonl}}
resources: {{accelerator: "TPU-v5e:4"}}
providers:
  gcp: {{project: {PROJECT}, region: {REGION}, bucket: "gs://{BUCKET}/ct"}}
""")
    proc = subprocess.run([sys.executable, "-m", "cloudtune.cli", "launch", str(spec), "--provider", "gcp", "--dry-run",
                           *extra], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"CLOUDTUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pool = json.loads(proc.stdout[proc.stdout.index("{"):])["customJob"]["jobSpec"]["workerPoolSpecs"][0]
    return proc.stdout, pool


def test_tpu_dry_run_names_an_image_with_pytorch_xla_and_one_process_per_host(tmp_path: Path) -> None:
    out, pool = _dry_run(tmp_path)
    assert pool["machineSpec"] == {"machineType": "ct5lp-hightpu-4t", "tpuTopology": "2x2"}
    assert pool["containerSpec"]["imageUri"] == TPU_IMAGE
    assert "one process per host through PyTorch/XLA" in out and "build and push it once" in out
    assert "containers/tpu" in out and "wheelhouses/" not in out  # the image carries the packages
    assert '\\"processes_per_node\\": 1' in json.dumps(pool)


def test_containers_tpu_builds_the_image_the_plan_names() -> None:
    """The default image's versions are the ones containers/tpu pins (and the lane tests)."""
    text = (Path(__file__).resolve().parents[2] / "containers/tpu/Dockerfile").read_text()
    assert re.search(r"ARG TORCH_XLA_VERSION=2\.9\.0", text) and "PJRT_DEVICE=TPU" in text


def test_tpu_dry_run_with_another_xla_image(tmp_path: Path) -> None:
    other = "us-docker.pkg.dev/vertex-ai/training/pytorch-xla.2-4.py310:latest"
    out, pool = _dry_run(tmp_path, "--set", f"image={other}")
    assert pool["containerSpec"]["imageUri"] == other
    assert '\\"processes_per_node\\": 1' in json.dumps(pool)
