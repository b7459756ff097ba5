"""For the same spec, what the local launcher lays out with `emulate: gcp` is what the Vertex AI request
declares, through the shared contract module: the runtime reads both into the same RuntimeContext."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.contracts import vertex as vx
from cloudtune.local.launcher import LocalLauncher
from cloudtune.entrypoint import parse_args
from cloudtune.runtime.context import detect
from cloudtune.spec import LocalSettings
from tests.gcp.conftest import SUFFIX, settings, spec_from, write_data

from cloudtune_gcp.launcher import GcpLauncher


def _vertex_env(request: dict, rank: int, nodes: int, root: Path) -> dict[str, str]:
    """What Vertex sets in replica `rank`'s container for this request (per the contract module)."""
    job = request["customJob"]["jobSpec"]
    env = {vx.JOB_ID_VAR: "123", vx.CLUSTER_SPEC_VAR: vx.cluster_spec(nodes, rank), "CLOUDTUNE_FS_ROOT": str(root)}
    env.update(vx.output_dirs(job["baseOutputDirectory"]["outputUriPrefix"]))
    for item in job["workerPoolSpecs"][min(rank, 1)]["containerSpec"].get("env", []):
        env[item["name"]] = item["value"]
    return env


@pytest.mark.parametrize("nodes", [1, 3])
def test_local_emulation_and_vertex_agree(tmp_path: Path, nodes: int) -> None:
    write_data(tmp_path)
    spec = spec_from({"name": "agree", "resources": {"nodes": nodes}, "inputs": {"train": "data/train.jsonl"},
                      "env": {"PLAIN": "1"}, "train": {"model": "gpt2"}}, tmp_path)
    local = LocalLauncher(home=tmp_path / "lhome").plan(spec, LocalSettings(emulate="gcp"), suffix=SUFFIX)
    gcp = GcpLauncher(home=tmp_path / "ghome").plan(spec, settings(), suffix=SUFFIX)
    pools = gcp.request["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert [int(p["replicaCount"]) for p in pools] == ([1, nodes - 1] if nodes > 1 else [1])

    for rank, node in enumerate(local.request["nodes"]):
        # the same variables, the same CLUSTER_SPEC, the same AIP_* layout relative to the output base
        venv = _vertex_env(gcp.request, rank, nodes, tmp_path / "vroot")
        assert {k for k in node["env"] if k.startswith(("AIP_", "CLUSTER", "CLOUD_ML"))} == \
            {k for k in venv if k.startswith(("AIP_", "CLUSTER", "CLOUD_ML"))}
        assert node["env"][vx.CLUSTER_SPEC_VAR] == venv[vx.CLUSTER_SPEC_VAR]
        lbase = node["env"][vx.MODEL_DIR_VAR].removesuffix("model/")
        vbase = venv[vx.MODEL_DIR_VAR].removesuffix("model/")
        for var in (vx.MODEL_DIR_VAR, vx.CHECKPOINT_DIR_VAR, vx.TENSORBOARD_DIR_VAR):
            assert node["env"][var].removeprefix(lbase) == venv[var].removeprefix(vbase)

        # the same cloudtune-run arguments; the runtime job differs only where the data lives
        largv = node["argv"][1:]
        vargs = pools[min(rank, 1)]["containerSpec"]["args"][4:]
        assert largv[0] == vargs[0] == vx.JOB_JSON_ARG
        ljob, vjob = json.loads(largv[1]), json.loads(vargs[1])
        for job in (ljob, vjob):
            job.pop("inputs"), job.pop("sources", None), job.pop("code_uri", None)
        assert ljob == vjob

        # the runtime reads the Vertex request into the same context as the local layout
        lctx = detect(parse_args(largv), {**node["env"], "CLOUDTUNE_FS_ROOT": str(tmp_path / "lroot")})
        vctx = detect(parse_args(vargs), venv)
        assert (lctx.provider, lctx.node_rank, lctx.num_nodes, lctx.processes_per_node) == \
            (vctx.provider, vctx.node_rank, vctx.num_nodes, vctx.processes_per_node) == ("gcp", rank, nodes, 1)
        assert str(vctx.model_dir).startswith(str(tmp_path / "vroot" / "gcs" / "cloudtune-test"))
        assert set(vctx.inputs) == set(lctx.inputs) == {"train"}
