"""The local launcher's `emulate: aws` layout and the SageMaker request agree on the container contract.

Both sides are read back through `cloudtune.runtime.context.detect()`: the local plan is materialised as
the supervisor does it; the SageMaker request is turned into the /opt/ml tree SageMaker would write
(hyperparameters.json from HyperParameters, resourceconfig.json from ResourceConfig, one directory per
channel), so the RuntimeContexts must match.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cloudtune.bundle import build_bundle
from cloudtune.contracts import sagemaker as sm
from cloudtune.kit.staging import stage
from cloudtune.local.launcher import LocalLauncher
from cloudtune.local.supervisor import materialise
from cloudtune.runtime.context import detect
from cloudtune.spec import LocalSettings
from tests.aws.conftest import SUFFIX, settings, spec_from, write_data

from cloudtune_aws.launcher import CHECKPOINT_DIR, CODE_CHANNEL, TENSORBOARD_DIR, AwsLauncher


def _spec(tmp_path: Path, nodes: int, command: bool):
    write_data(tmp_path)
    data: dict[str, Any] = {"name": "contract", "resources": {"nodes": nodes},
                            "inputs": {"train": "data/train.jsonl", "eval": "data/eval"}, "env": {"PLAIN": "1"}}
    if command:
        data |= {"command": "python train.py", "code": "src"}
    else:
        data["train"] = {"model": "./model"}
    return spec_from(data, tmp_path)


def sagemaker_container(request: dict[str, Any], uploads: dict[str, str], root: Path, host_index: int) -> dict[str, str]:
    """Lay out what SageMaker writes into a training container for `request` under `root`; return its env."""
    hosts = [f"algo-{i + 1}" for i in range(request["ResourceConfig"]["InstanceCount"])]
    config = root / "opt/ml/input/config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": hosts[host_index], "hosts": hosts}))
    (config / "inputdataconfig.json").write_text(json.dumps({
        c["ChannelName"]: {"TrainingInputMode": c["InputMode"], "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"]}
        for c in request["InputDataConfig"]}))
    for ch in request["InputDataConfig"]:
        uri = ch["DataSource"]["S3DataSource"]["S3Uri"]
        dest = root / "opt/ml/input/data" / ch["ChannelName"]
        dest.mkdir(parents=True)
        src = Path(uploads[uri])
        if src.is_dir():  # S3Prefix ".../name/": the objects under it, by relative path
            for f in src.rglob("*"):
                if f.is_file():
                    (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                    (dest / f.relative_to(src)).write_bytes(f.read_bytes())
        else:  # a single object: kept under its own name
            (dest / src.name).write_bytes(src.read_bytes())
    submit_dir = request["HyperParameters"].get("sagemaker_submit_directory")
    if submit_dir:  # script mode (the stock image): the toolkit extracts the code tarball into /opt/ml/code
        (root / "opt/ml/code").mkdir(parents=True)
        with tarfile.open(uploads[json.loads(submit_dir)]) as tar:
            tar.extractall(root / "opt/ml/code", filter="data")
    (root / "etc").mkdir()
    (root / "etc/hosts").write_text("".join(f"127.0.0.1 {h}\n" for h in hosts))
    return {"CLOUDTUNE_FS_ROOT": str(root), "TRAINING_JOB_NAME": request["TrainingJobName"]}


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else Path(path).relative_to(root).as_posix()


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("command", [False, True])
def test_local_emulation_and_sagemaker_agree(tmp_path: Path, lock_dir: Path, nodes: int, command: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path, nodes, command)
    bundle = build_bundle(Path(spec.code), dest=tmp_path) if command else None
    local = LocalLauncher(home=tmp_path / "lhome").plan(spec, LocalSettings(emulate="aws"), suffix=SUFFIX, bundle=bundle)
    aws = AwsLauncher(home=tmp_path / "ahome", lock_dir=lock_dir).plan(spec, settings(), suffix=SUFFIX, bundle=bundle)
    for up in aws.uploads:
        stage(up)  # what submit() does before it uploads
    assert local.job_name == aws.job_name
    request = aws.request

    # hyperparameters: the same keys (on the stock image the training toolkit's script-mode keys too); the runtime
    # job text and the program are the very same (the submit directory and region name the emulated bucket and region)
    node0 = local.request["nodes"][0]
    local_hyper = node0["files"]["opt/ml/input/config/hyperparameters.json"]
    cloud_hyper = request["HyperParameters"]
    assert set(local_hyper) == set(cloud_hyper)
    assert spec.image or {sm.PROGRAM_KEY, sm.SUBMIT_DIR_KEY, sm.REGION_KEY} <= set(cloud_hyper)
    for key in (sm.JOB_KEY, sm.PROGRAM_KEY):
        assert local_hyper.get(key) == cloud_hyper.get(key), key
    # resourceconfig.json and checkpointconfig.json: what SageMaker writes for this request, on every host
    for index, node in enumerate(local.request["nodes"]):
        files = node["files"]
        hosts = [sm.host(i) for i in range(nodes)]
        assert files["opt/ml/input/config/resourceconfig.json"] == sm.resource_config(
            hosts[index], hosts, request["ResourceConfig"]["InstanceType"])
        local_ckpt = files["opt/ml/input/config/checkpointconfig.json"]
        assert set(local_ckpt) == set(request["CheckpointConfig"])
        assert local_ckpt["LocalPath"] == request["CheckpointConfig"]["LocalPath"]
    # channels: the same names and modes (aws always ships `code`, which carries the cloudtune wheel, and on the
    # stock image `wheels`, which the entrypoint installs from before cloudtune-run starts; the local launcher runs
    # in this machine's Python and needs neither)
    local_channels = node0["files"]["opt/ml/input/config/inputdataconfig.json"]
    aws_channels = {c["ChannelName"]: {"TrainingInputMode": c["InputMode"],
                                       "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"]}
                    for c in request["InputDataConfig"]}
    assert set(aws_channels) == set(local_channels) | ({CODE_CHANNEL} if spec.image else {"wheels"})
    for name, ch in local_channels.items():
        assert {k: ch[k] for k in ("TrainingInputMode", "S3DistributionType")} == aws_channels[name]
    # container paths
    assert request["CheckpointConfig"]["LocalPath"] == CHECKPOINT_DIR
    assert local.request["checkpoint_dir"].endswith(CHECKPOINT_DIR)
    assert local.request["model_dir"].endswith("/opt/ml/model") and aws.model_uri.endswith("/output/model.tar.gz")
    assert request["ResourceConfig"]["InstanceCount"] == len(local.request["nodes"]) == nodes

    # read both containers back through the runtime
    materialise(local.to_dict())
    uploads = {u.destination: u.source for u in aws.uploads}
    for rank, node in enumerate(local.request["nodes"]):
        lroot = Path(node["root"])
        lctx = detect(None, node["env"])
        aroot = tmp_path / f"sm-{rank}"
        actx = detect(None, sagemaker_container(request, uploads, aroot, rank))
        assert actx.provider == lctx.provider == "aws"
        assert actx.job == lctx.job
        assert (actx.node_rank, actx.num_nodes, actx.processes_per_node) == (lctx.node_rank, lctx.num_nodes, lctx.processes_per_node)
        assert actx.hosts == lctx.hosts and actx.job_name == lctx.job_name
        # code_dir: a train job has no code locally, while aws always ships `code` (the wheel); used by commands only
        for attr in ("model_dir", "checkpoint_dir", "log_dir", "failure_file", *(("code_dir",) if command else ())):
            assert _rel(getattr(actx, attr), aroot) == _rel(getattr(lctx, attr), lroot), attr
        assert _rel(actx.log_dir, aroot) == TENSORBOARD_DIR.lstrip("/")
        assert {k: _rel(v, aroot) for k, v in actx.inputs.items()} == {k: _rel(v, lroot) for k, v in lctx.inputs.items()}
        for name in lctx.inputs:  # the same files land in each channel
            lfiles = sorted(p.relative_to(lctx.inputs[name]).as_posix() for p in Path(lctx.inputs[name]).rglob("*") if p.is_file())
            afiles = sorted(p.relative_to(actx.inputs[name]).as_posix() for p in Path(actx.inputs[name]).rglob("*") if p.is_file())
            assert afiles == lfiles, name
        if command:  # the user's code is in /opt/ml/code on both sides (script mode extracted the bundle there)
            assert _rel(actx.code_dir, aroot) == "opt/ml/code"
            names = {p.relative_to(actx.code_dir).as_posix() for p in actx.code_dir.rglob("*") if p.is_file()}
            assert set(bundle.files) <= names and any(n.endswith(".whl") for n in names) and ".cloudtune/entry.py" in names
            local_code = lroot / "opt/ml/code"
            assert set(bundle.files) <= {p.relative_to(local_code).as_posix() for p in local_code.rglob("*") if p.is_file()}
