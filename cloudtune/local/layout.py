"""Each cloud's container contract, laid out under a local job directory.

`layout(...)` is pure: it returns the per-node description (files to write, environment, argv, cwd)
and the copies to make. The supervisor carries it out. Paths inside a node are the cloud's own
(`/opt/ml/...`, `/gcs/...`), rooted at the node's `root` through CLOUDTUNE_FS_ROOT.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOCAL_BUCKET = "cloudtune-local"
RUN = "cloudtune-run"


@dataclass(frozen=True)
class Copy:
    source: str
    destination: str  # a directory; a file source lands inside it under its own name, a dir's contents are copied in
    unpack: bool = False  # a .tar.gz source is extracted into destination (Azure ML's code snapshot)


@dataclass
class Node:
    host: str
    root: str
    cwd: str
    argv: list[str]
    env: dict[str, str]
    files: dict[str, Any] = field(default_factory=dict)  # path under root -> JSON content


@dataclass
class Layout:
    nodes: list[Node]
    copies: list[Copy]
    model_dir: str
    checkpoint_dir: str
    job: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(n) for n in self.nodes],
            "copies": [asdict(c) for c in self.copies],
            "model_dir": self.model_dir,
            "checkpoint_dir": self.checkpoint_dir,
        }


def _hosts_file(hosts: list[str]) -> str:
    return "127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in hosts)


def _input_path(source: str, base: str) -> str:
    """Where a copied input is seen: a file keeps its name inside the channel dir; a dir is the channel."""
    return f"{base}/{Path(source).name}" if not Path(source).is_dir() else base


def sagemaker(job_dir: Path, job_name: str, job: dict[str, Any], inputs: dict[str, str], nodes: int,
              bundle: str | None, master_port: int) -> Layout:
    hosts = [f"algo-{i + 1}" for i in range(nodes)]
    job = dict(job, inputs={name: f"/opt/ml/input/data/{name}" for name in sorted(inputs)})
    out: list[Node] = []
    copies: list[Copy] = []
    channels = {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                for name in [*sorted(inputs), *(["code"] if bundle else [])]}
    for host in hosts:
        root = job_dir / "hosts" / host
        for name, src in sorted(inputs.items()):
            copies.append(Copy(src, str(root / "opt/ml/input/data" / name)))
        if bundle:
            copies.append(Copy(bundle, str(root / "opt/ml/input/data/code")))
        files = {
            "opt/ml/input/config/hyperparameters.json": {"cloudtune_job": json.dumps(job, sort_keys=True)},
            "opt/ml/input/config/resourceconfig.json": {
                "current_host": host,
                "current_instance_type": "local",
                "current_group_name": "homogeneousCluster",
                "hosts": hosts,
                "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": hosts}],
                "network_interface_name": "lo",
            },
            "opt/ml/input/config/inputdataconfig.json": channels,
            "etc/hosts": _hosts_file(hosts),
        }
        env = {
            "TRAINING_JOB_NAME": job_name,
            "TRAINING_JOB_ARN": f"arn:aws:sagemaker:local:000000000000:training-job/{job_name}",
            "CLOUDTUNE_FS_ROOT": str(root),
            "MASTER_PORT": str(master_port),
        }
        out.append(Node(host, str(root), str(root / "opt/ml/code"), [RUN], env, files))
    first = job_dir / "hosts" / hosts[0]
    return Layout(out, copies, str(first / "opt/ml/model"), str(first / "opt/ml/checkpoints"), job)


def vertex(job_dir: Path, job_name: str, job: dict[str, Any], inputs: dict[str, str], nodes: int,
           bundle: str | None, master_port: int) -> Layout:
    root = job_dir / "fs"
    base = f"gs://{LOCAL_BUCKET}/jobs/{job_name}"
    copies: list[Copy] = []
    job = dict(job)
    seen: dict[str, str] = {}
    for name, src in sorted(inputs.items()):
        dest = f"{base}/inputs/{name}"
        copies.append(Copy(src, str(root / "gcs" / dest[len("gs://"):])))
        seen[name] = _input_path(src, dest)
    job["inputs"] = seen
    if bundle:
        copies.append(Copy(bundle, str(root / "gcs" / LOCAL_BUCKET / "bundles")))
        job["code_uri"] = f"gs://{LOCAL_BUCKET}/bundles/{Path(bundle).name}"
    hosts = ["workerpool0-0"] + [f"workerpool1-{i}" for i in range(nodes - 1)]
    cluster: dict[str, list[str]] = {"workerpool0": [f"{hosts[0]}:2222"]}
    if nodes > 1:
        cluster["workerpool1"] = [f"{h}:2222" for h in hosts[1:]]
    out: list[Node] = []
    for rank, host in enumerate(hosts):
        task = {"type": "workerpool0", "index": 0} if rank == 0 else {"type": "workerpool1", "index": rank - 1}
        env = {
            "CLOUD_ML_JOB_ID": job_name,
            "AIP_MODEL_DIR": f"{base}/model/",
            "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
            "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
            "CLUSTER_SPEC": json.dumps({"cluster": cluster, "environment": "cloud", "task": task}, sort_keys=True),
            "CLOUDTUNE_FS_ROOT": str(root),
            "MASTER_PORT": str(master_port),
        }
        cwd = job_dir / "nodes" / host
        out.append(Node(host, str(root), str(cwd), [RUN, "--job-json", json.dumps(job, sort_keys=True)], env))
    # all nodes share one root (the bucket mount); /etc/hosts lives in it
    out[0].files["etc/hosts"] = _hosts_file(hosts)
    gcs = root / "gcs" / LOCAL_BUCKET / "jobs" / job_name
    return Layout(out, copies, str(gcs / "model"), str(gcs / "checkpoints"), job)


def azure(job_dir: Path, job_name: str, job: dict[str, Any], inputs: dict[str, str], nodes: int,
          bundle: str | None, master_port: int) -> Layout:
    mounts = job_dir / "mounts"
    copies = [Copy(src, str(mounts / "inputs" / name)) for name, src in sorted(inputs.items())]
    args = [RUN, "--job-json", json.dumps(job, sort_keys=True)]
    for name, src in sorted(inputs.items()):
        args += ["--input", f"{name}={_input_path(src, str(mounts / 'inputs' / name))}"]
    args += ["--model-dir", str(mounts / "outputs/model"), "--checkpoint-dir", str(mounts / "outputs/checkpoints"),
             "--log-dir", str(mounts / "outputs/logs")]
    out: list[Node] = []
    for rank in range(nodes):
        cwd = job_dir / "nodes" / f"node-{rank}"
        if bundle:
            copies.append(Copy(bundle, str(cwd), unpack=True))
        env = {"AZUREML_RUN_ID": job_name, "AZUREML_EXPERIMENT_NAME": job["name"], "CLOUDTUNE_FS_ROOT": str(cwd)}
        if nodes > 1:
            env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port), "WORLD_SIZE": str(nodes),
                    "NODE_RANK": str(rank), "RANK": str(rank)}
        out.append(Node(f"node-{rank}", str(cwd), str(cwd), list(args), env))
    return Layout(out, copies, str(mounts / "outputs/model"), str(mounts / "outputs/checkpoints"), job)


EMULATORS = {"aws": sagemaker, "gcp": vertex, "azure": azure}
