"""The local launcher lays out each cloud's container contract, and the runtime reads it back.

For every emulated cloud and node count: plan -> materialise -> `detect()` with exactly the node's
environment and argv must yield the inputs, dirs, ranks and master the plan declared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

from cloudtune.local.launcher import LocalLauncher
from cloudtune.local.supervisor import materialise
from cloudtune.entrypoint import parse_args
from cloudtune.runtime.context import detect
from cloudtune.spec import LocalSettings, validate_spec


def make_spec(tmp_path: Path, nodes: int = 1, command: str | None = None):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data/train.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "data/eval.jsonl").write_text('{"text": "bye"}\n')
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model/config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model/model.safetensors").write_bytes(placeholder_weights())  # the smallest weights and tokenizer
    (tmp_path / "model/tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)      # the preflight takes for them
    data = {
        "name": "contract",
        "resources": {"nodes": nodes},
        "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
        "env": {"PLAIN": "1"},
    }
    if command:
        data["command"] = command
    else:
        data["train"] = {"model": "./model"}
    return validate_spec(data, base_dir=tmp_path)


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_contract_round_trip(tmp_path: Path, emulate: str, nodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(tmp_path, nodes)
    launcher = LocalLauncher(home=tmp_path / "home")
    plan = launcher.plan(spec, LocalSettings(emulate=emulate), suffix="20260101-000000-abcd")
    assert plan.job_name == "contract-20260101-000000-abcd"
    materialise(plan.to_dict())
    request = plan.request
    assert len(request["nodes"]) == nodes
    for rank, node in enumerate(request["nodes"]):
        monkeypatch.chdir(node["cwd"])
        ctx = detect(parse_args(node["argv"][1:]), node["env"])
        assert ctx.provider == emulate
        assert ctx.node_rank == rank and ctx.num_nodes == nodes
        assert ctx.master_addr == "127.0.0.1"
        assert ctx.master_port == int(request["nodes"][0]["env"].get("MASTER_PORT", ctx.master_port))
        assert ctx.job["train"]["model"] == "model"  # the local model travels as an input
        assert set(ctx.inputs) == {"train", "eval", "model"}
        assert (Path(ctx.inputs["model"]) / "config.json").is_file() or (Path(ctx.inputs["model"]) / "model/config.json").is_file()
        train = Path(ctx.inputs["train"])
        text = (train if train.is_file() else train / "train.jsonl").read_text()
        assert "hello" in text
        if rank == 0:
            assert str(ctx.model_dir).rstrip("/") == plan.model_uri.rstrip("/")
        assert str(ctx.model_dir).startswith(str(Path(request["job_dir"])))
        assert ctx.job["env"] == {"PLAIN": "1"}


def test_sagemaker_files_are_the_documented_ones(tmp_path: Path) -> None:
    plan = LocalLauncher(home=tmp_path / "home").plan(make_spec(tmp_path, 2), LocalSettings(emulate="aws"), suffix="s")
    materialise(plan.to_dict())
    root = Path(plan.request["nodes"][1]["root"])
    config = root / "opt/ml/input/config"
    resource = json.loads((config / "resourceconfig.json").read_text())
    assert resource["current_host"] == "algo-2" and resource["hosts"] == ["algo-1", "algo-2"]
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"train", "eval", "model"}
    hyper = json.loads((config / "hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hyper.values())  # SageMaker passes hyperparameters as strings
    assert (root / "opt/ml/input/data/train/train.jsonl").is_file()
    assert plan.request["nodes"][1]["env"]["TRAINING_JOB_NAME"] == plan.job_name


def test_vertex_variables_are_gs_uris(tmp_path: Path) -> None:
    plan = LocalLauncher(home=tmp_path / "home").plan(make_spec(tmp_path, 2), LocalSettings(emulate="gcp"), suffix="s")
    env = plan.request["nodes"][1]["env"]
    for var in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR"):
        assert env[var].startswith("gs://")
    spec = json.loads(env["CLUSTER_SPEC"])
    assert spec["task"] == {"type": "workerpool1", "index": 0}
    assert len(spec["cluster"]["workerpool0"]) == 1  # the chief pool has exactly one replica


def test_azure_passes_inputs_on_the_command_line(tmp_path: Path) -> None:
    plan = LocalLauncher(home=tmp_path / "home").plan(make_spec(tmp_path, 2), LocalSettings(emulate="azure"), suffix="s")
    argv = plan.request["nodes"][0]["argv"]
    assert "--model-dir" in argv and "--checkpoint-dir" in argv
    assert any(a.startswith("train=") for a in argv)
    env = plan.request["nodes"][1]["env"]
    assert env["NODE_RANK"] == "1" and env["WORLD_SIZE"] == "2" and env["MASTER_ADDR"] == "127.0.0.1"


def test_plan_is_pure(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    before = spec.model_dump_json()
    launcher = LocalLauncher(home=tmp_path / "home")
    a = launcher.plan(spec, LocalSettings(), suffix="s")
    b = launcher.plan(spec, LocalSettings(), suffix="s")
    assert a.to_dict() == b.to_dict()
    assert spec.model_dump_json() == before
    assert not (tmp_path / "home").exists()  # planning writes nothing
