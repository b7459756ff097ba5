"""The CLI: exit codes, JSON shapes, no traceback for invalid input, and no heavy import on start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

HEAVY = ("torch", "transformers", "boto3", "botocore", "sagemaker", "google.cloud", "azure")


def run_cli(*args: str, home: Path, cwd: Path | None = None, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    prefix = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-m", "cloudtune.cli"]
    return subprocess.run(prefix + list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def make_model_dir(path: Path) -> Path:
    """A directory the plan-time checks take for a saved model: config, weights and a tokenizer file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "gpt2", "n_positions": 1024}')
    (path / "model.safetensors").write_bytes(placeholder_weights())
    (path / "tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)
    return path


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "data/eval.jsonl").write_text('{"text": "b"}\n')
    make_model_dir(tmp_path / "models/tiny")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: clitest\n"
        "inputs: {train: data/train.jsonl, eval: data/eval.jsonl}\n"
        "train: {model: ./models/tiny}\n"
    )
    return spec


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    res = run_cli("--help", home=tmp_path, importtime=True)
    assert res.returncode == 0 and "launch" in res.stdout
    heavy = sorted(m for m in imported(res.stderr) if m.startswith(HEAVY))
    assert heavy == []
    assert "pydantic" not in imported(res.stderr)


def test_dry_run_json_and_imports(spec_file: Path, tmp_path: Path) -> None:
    res = run_cli("launch", str(spec_file), "--dry-run", "--json", home=tmp_path / "home", importtime=True)
    assert res.returncode == 0, res.stderr[-2000:]
    plan = json.loads(res.stdout)
    for key in ("provider", "job_name", "request", "uploads", "instance_type", "estimated_usd_per_hour"):
        assert key in plan
    assert plan["provider"] == "local" and plan["job_name"].startswith("clitest-")
    assert {"source", "destination", "bytes", "sha256"} <= set(plan["uploads"][0])
    assert sorted(m for m in imported(res.stderr) if m.startswith(HEAVY)) == []
    assert not (tmp_path / "home" / "jobs").exists()  # a dry run submits nothing


def test_dry_run_human_output(spec_file: Path, tmp_path: Path) -> None:
    res = run_cli("launch", str(spec_file), "--dry-run", "--set", "providers.local.emulate=gcp", home=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "AIP_MODEL_DIR" in res.stdout and "uploads (" in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["launch", "{spec}", "--provider", "lcoal", "--dry-run"], "did you mean 'local'"),
        (["launch", "{spec}", "--set", "resources.nodes=zero", "--dry-run"], "resources.nodes"),
        (["launch", "{spec}", "--set", "oops", "--dry-run"], "KEY=VALUE"),
        (["launch", "missing.yaml", "--dry-run"], "no such file"),
        (["validate", "{spec}", "--set", "train.data.text_fild=x"], "did you mean 'text_field'"),
        (["status", "nope-123"], "cloudtune list"),
        (["launch", "{spec}", "--set", "resources.accelerator=TPU-v5e", "--dry-run"], "TPU"),
    ],
)
def test_invalid_input_exits_2_without_traceback(spec_file: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    res = run_cli(*[a.format(spec=spec_file) for a in args], home=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_plugin_gives_install_hint(spec_file: Path, tmp_path: Path) -> None:
    """A launcher whose plugin cannot be imported: one error with the install command that works here."""
    from cloudtune.launcher import install_hint

    blocked = "import sys; sys.modules['cloudtune_azure'] = None; from cloudtune.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", blocked, "launch", str(spec_file), "--provider", "azure", "--dry-run"],
                         env=dict(os.environ, CLOUDTUNE_HOME=str(tmp_path)), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert install_hint("azure") in res.stderr and "Traceback" not in res.stderr


def test_validate_schema_init(tmp_path: Path, spec_file: Path) -> None:
    res = run_cli("validate", str(spec_file), home=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("ok: clitest")
    schema = json.loads(run_cli("schema", home=tmp_path).stdout)
    assert schema["title"] == "cloudtune job spec v1"
    target = tmp_path / "new" / "job.yaml"
    target.parent.mkdir()
    assert run_cli("init", str(target), home=tmp_path).returncode == 0
    res = run_cli("validate", str(target), home=tmp_path)  # the template names inputs that do not exist yet
    assert res.returncode == 2 and "inputs not found" in res.stderr and "Traceback" not in res.stderr
    for name in ("data/train.jsonl", "data/eval.jsonl"):
        (target.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (target.parent / name).write_text('{"text": "a"}\n')
    make_model_dir(target.parent / "models/base")
    res = run_cli("validate", str(target), home=tmp_path)
    assert res.returncode == 0, res.stderr
    again = run_cli("init", str(target), home=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


def test_catalog_command(tmp_path: Path) -> None:
    res = run_cli("catalog", "--provider", "gcp", "--accelerator", "l4", home=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "g2-standard" in res.stdout
    data = json.loads(run_cli("catalog", "--json", home=tmp_path).stdout)
    assert {o["provider"] for o in data["offers"]} == {"aws", "gcp", "azure"}


def test_list_empty(tmp_path: Path) -> None:
    res = run_cli("list", "--json", home=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout) == []


@pytest.mark.parametrize("provider, accelerator, who", [("aws", "TPU-v5e", "gcp does"), ("azure", "L4", "aws, gcp do"),
                                                       ("aws", "v6e", "gcp does")])
def test_catalog_says_who_has_what_a_provider_lacks(tmp_path: Path, provider: str, accelerator: str, who: str) -> None:
    res = run_cli("catalog", "--provider", provider, "--accelerator", accelerator, home=tmp_path)
    assert res.returncode == 2 and who in res.stderr and "To fix: cloudtune catalog --accelerator" in res.stderr
    assert "Traceback" not in res.stderr and "PROVIDER" not in res.stdout  # no empty table
