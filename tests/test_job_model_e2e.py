"""Real (tiny) fine-tunes on the local launcher: download a finished job's model, and start new jobs from it with
`train.model: job:<JOB>` — from a full model, and from a LoRA adapter (merged onto its base in the new job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune import api
from tests.test_local_e2e import write_job
from tests.tiny_models import make_tiny_gpt2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def spec_in(where: Path, tiny_model: Path, **extra: object) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    return write_job(where, tiny_model, **extra)


def run(spec: Path) -> api.Job:
    job = api.launch(spec)
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    return job


def test_download_then_train_from_the_job(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    first = run(spec_in(tmp_path / "a", tiny_model))
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, "-m", "cloudtune.cli", "download", first.job_id, "--checkpoints"], cwd=work,
                         env=dict(os.environ, CLOUDTUNE_HOME=str(home)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = work / f"{first.job_id}-model"
    AutoModelForCausalLM.from_pretrained(got)
    assert (got / "metrics.json").read_bytes() == (Path(first.model_uri) / "metrics.json").read_bytes()
    assert list((got / "checkpoints").glob("checkpoint-*"))

    second = run(_spec_from_job(tmp_path / "b", tiny_model, f"job:{first.job_id[:-2]}"))  # a unique id prefix
    log = "\n".join(second.logs())
    plan = json.loads((home / "jobs" / second.job_id / "plan.json").read_text())
    assert plan["spec"]["inputs"]["model"] == first.model_uri
    assert "loading model" in log
    AutoModelForCausalLM.from_pretrained(second.model_uri)


def _spec_from_job(where: Path, tiny_model: Path, model: str, **extra: object) -> Path:
    """write_job's spec (its data and hyperparameters), with train.model set to `model` (e.g. job:<JOB>)."""
    import yaml

    spec = spec_in(where, tiny_model, **extra)
    data = yaml.safe_load(spec.read_text())
    data["train"]["model"] = model
    spec.write_text(yaml.safe_dump(data))
    return spec


def test_a_lora_adapter_job_is_a_model(tmp_path: Path, home: Path, tiny_model: Path) -> None:
    """The first job leaves an adapter only; the second merges it onto the base (brought as train.base_model) and
    trains a new adapter, saved with the merged weights so that its output loads on its own."""
    from transformers import AutoModelForCausalLM

    lora = {"lora": {"r": 4, "alpha": 8}}
    first = run(_with_train(spec_in(tmp_path / "a", tiny_model, providers={"local": {"emulate": "gcp"}}), lora))
    adapter = Path(first.model_uri)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()

    spec = _with_train(_spec_from_job(tmp_path / "b", tiny_model, f"job:{first.job_id}"), lora)
    deep = subprocess.run([sys.executable, "-m", "cloudtune.cli", "validate", str(spec), "--deep"],
                          env=dict(os.environ, CLOUDTUNE_HOME=str(home)), capture_output=True, text=True, timeout=120)
    assert deep.returncode == 0 and "is a LoRA adapter: the job merges it onto its base" in deep.stdout, deep.stderr
    second = run(spec)
    plan = json.loads((home / "jobs" / second.job_id / "plan.json").read_text())
    assert plan["spec"]["train"]["base_model"] == "base_model" and plan["spec"]["inputs"]["base_model"] == str(tiny_model)
    log = "\n".join(second.logs())
    assert "applied to" in log and "merged" in log
    out = Path(second.model_uri)
    assert (out / "model.safetensors").is_file() and (out / "adapter/adapter_config.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)


def _with_train(spec: Path, train: dict[str, object]) -> Path:
    import yaml

    data = yaml.safe_load(spec.read_text())
    data["train"].update(train)
    spec.write_text(yaml.safe_dump(data))
    return spec
