"""For the same spec, what the local launcher lays out with `emulate: azure` is what the Azure ML command job
declares, through the shared contract module: the runtime reads both into the same RuntimeContext."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from cloudtune.contracts import azureml as az
from cloudtune.local.launcher import LocalLauncher
from cloudtune.entrypoint import parse_args
from cloudtune.runtime.context import detect
from cloudtune.spec import LocalSettings, validate_spec
from tests.azure.planning import SUFFIX, settings, write_data

from cloudtune_azure.launcher import AzureLauncher

BOOTSTRAP_ARGS = 4  # bundle, pip flags, wheel extras, extra requirements (cloudtune_azure.request.BOOTSTRAP)


def _azure_argv(request: dict, mounts: Path) -> list[str]:
    """cloudtune-run's arguments as Azure ML runs them: ${{inputs.X}} / ${{outputs.X}} replaced by the paths the
    service mounts them at."""
    def mount(match: re.Match[str]) -> str:
        return str(mounts / match.group(1) / match.group(2))

    words = shlex.split(re.sub(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}", mount, request["command"]))
    start = words.index("cloudtune-bootstrap") + 1 + BOOTSTRAP_ARGS
    return words[start:]


def _azure_env(request: dict, rank: int, nodes: int) -> dict[str, str]:
    """What Azure ML sets on node `rank` for this command job (the pytorch distribution, one process per node)."""
    env = {az.RUN_ID_VAR: request["name"], az.EXPERIMENT_VAR: request["experiment_name"],
           **request.get("environment_variables", {})}
    dist = request.get("distribution")
    if dist:
        assert dist == {"type": "pytorch", "process_count_per_instance": 1}
        env |= {"MASTER_ADDR": "10.0.0.4", "MASTER_PORT": "6105", "WORLD_SIZE": str(nodes), "NODE_RANK": str(rank),
                "RANK": str(rank), "LOCAL_RANK": "0"}
    return env


@pytest.mark.parametrize("nodes", [1, 3])
def test_local_emulation_and_azure_ml_agree(tmp_path: Path, nodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    write_data(tmp_path)
    spec = validate_spec({"name": "agree", "resources": {"nodes": nodes}, "inputs": {"train": "data/train.jsonl"},
                          "env": {"PLAIN": "1"}, "train": {"model": "gpt2"}}, base_dir=tmp_path)
    local = LocalLauncher(home=tmp_path / "lhome").plan(spec, LocalSettings(emulate="azure"), suffix=SUFFIX)
    azure = AzureLauncher(home=tmp_path / "ahome").plan(spec, settings(), suffix=SUFFIX)
    assert azure.request["resources"]["instance_count"] == nodes
    argv = _azure_argv(azure.request, tmp_path / "amounts")

    for rank, node in enumerate(local.request["nodes"]):
        largv = node["argv"][1:]
        # the same cloudtune-run arguments, in the same order; only where the data lives differs
        assert [a for a in largv if a.startswith("--")] == [a for a in argv if a.startswith("--")]
        assert largv[0] == argv[0] == az.JOB_JSON_ARG
        ljob, ajob = json.loads(largv[1]), json.loads(argv[1])
        for job in (ljob, ajob):
            job.pop("inputs"), job.pop("sources", None)
        assert ljob == ajob

        # the same variables (the local launcher also pins MASTER_PORT on one node, so jobs never share one)
        aenv = _azure_env(azure.request, rank, nodes)
        contract = {az.RUN_ID_VAR, az.EXPERIMENT_VAR, "WORLD_SIZE", "NODE_RANK", "RANK", "MASTER_ADDR", "LOCAL_RANK"}
        assert {k for k in node["env"] if k in contract} == {k for k in aenv if k in contract}

        # the runtime reads both into the same context
        monkeypatch.chdir(node["cwd"] if Path(node["cwd"]).exists() else tmp_path)
        lctx = detect(parse_args(largv), node["env"])
        actx = detect(parse_args(argv), aenv)
        assert (lctx.provider, lctx.node_rank, lctx.num_nodes, lctx.processes_per_node) == \
            (actx.provider, actx.node_rank, actx.num_nodes, actx.processes_per_node) == ("azure", rank, nodes, 1)
        assert set(lctx.inputs) == set(actx.inputs) == {"train"}
        assert actx.model_dir == tmp_path / "amounts" / "outputs" / "model"
        assert actx.checkpoint_dir == tmp_path / "amounts" / "outputs" / "checkpoints"
        assert actx.inputs["train"] == tmp_path / "amounts" / "inputs" / "train"
        assert lctx.model_dir.name == actx.model_dir.name == az.MODEL_OUTPUT
