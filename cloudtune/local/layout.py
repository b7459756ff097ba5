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

from cloudtune.contracts import azureml as az, sagemaker as sm, vertex as vx
from cloudtune.local.mounts import node_env as mount_env

LOCAL_BUCKET = "cloudtune-local"
EMULATED_REGION = "us-east-1"  # the emulated SageMaker job's region (its ARN, sagemaker_region)
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
              bundle: str | None, master_port: int, instance_type: str = "ml.m5.xlarge",
              script_mode: bool = True) -> Layout:
    """SageMaker's tree on each host: the config JSON files (hyperparameters, resourceconfig, inputdataconfig,
    checkpointconfig), the channels, the extracted code. `instance_type` is the one the aws plan would request
    (resourceconfig.json names it); `script_mode` (a stock-image job) adds the training toolkit's keys to the
    hyperparameters as the request does."""
    hosts = [sm.host(i) for i in range(nodes)]
    job = dict(job, inputs={name: sm.channel_dir(name) for name in sorted(inputs)})
    out: list[Node] = []
    copies: list[Copy] = []
    channels = {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                for name in sorted(inputs)}
    hyperparameters = {sm.JOB_KEY: json.dumps(job, sort_keys=True)}
    if script_mode:  # the toolkit extracts sagemaker_submit_directory (here: the bundle) into /opt/ml/code
        archive = Path(bundle).name if bundle else f"{job_name}.tar.gz"
        hyperparameters |= sm.script_mode_hyperparameters(f"s3://{LOCAL_BUCKET}/bundles/{archive}", EMULATED_REGION)
    for host in hosts:
        root = job_dir / "hosts" / host
        for name, src in sorted(inputs.items()):
            copies.append(Copy(src, str(root / sm.channel_dir(name).lstrip("/"))))
        if bundle:
            copies.append(Copy(bundle, str(root / sm.CODE_DIR.lstrip("/")), unpack=True))
        files = {
            sm.HYPERPARAMETERS.lstrip("/"): hyperparameters,
            sm.RESOURCE_CONFIG.lstrip("/"): sm.resource_config(host, hosts, instance_type),
            sm.INPUT_DATA_CONFIG.lstrip("/"): channels,
            sm.CHECKPOINT_CONFIG.lstrip("/"): sm.checkpoint_config(f"s3://{LOCAL_BUCKET}/checkpoints/{job_name}"),
            "etc/hosts": _hosts_file(hosts),
        }
        env = {
            sm.JOB_NAME_VAR: job_name,
            sm.JOB_ARN_VAR: f"arn:aws:sagemaker:{EMULATED_REGION}:000000000000:training-job/{job_name}",
            "CLOUDTUNE_FS_ROOT": str(root),
            "MASTER_PORT": str(master_port),
        }
        out.append(Node(host, str(root), str(root / sm.CODE_DIR.lstrip("/")), [RUN], env, files))
    first = job_dir / "hosts" / hosts[0]
    return Layout(out, copies, str(first / sm.MODEL_DIR.lstrip("/")), str(first / sm.CHECKPOINT_DIR.lstrip("/")), job)


def vertex(job_dir: Path, job_name: str, job: dict[str, Any], inputs: dict[str, str], nodes: int,
           bundle: str | None, master_port: int) -> Layout:
    root = job_dir / "fs"
    base = f"gs://{LOCAL_BUCKET}/jobs/{job_name}"
    copies: list[Copy] = []
    job = dict(job)
    seen: dict[str, str] = {}
    for name, src in sorted(inputs.items()):
        dest = f"{base}/inputs/{name}"
        copies.append(Copy(src, str(root / vx.mount_path(dest).lstrip("/"))))
        seen[name] = _input_path(src, dest)
    job["inputs"] = seen
    if bundle:
        copies.append(Copy(bundle, str(root / vx.mount_path(f"gs://{LOCAL_BUCKET}/bundles").lstrip("/"))))
        job["code_uri"] = f"gs://{LOCAL_BUCKET}/bundles/{Path(bundle).name}"
    hosts = vx.hosts(nodes)
    out: list[Node] = []
    for rank, host in enumerate(hosts):
        env = {
            vx.JOB_ID_VAR: job_name,
            **vx.output_dirs(base),
            vx.CLUSTER_SPEC_VAR: vx.cluster_spec(nodes, rank),
            "CLOUDTUNE_FS_ROOT": str(root),
            "MASTER_PORT": str(master_port),
            **mount_env("gcp", [str(root / vx.GCS_MOUNT.strip("/"))]),  # /gcs: Cloud Storage FUSE
        }
        cwd = job_dir / "nodes" / host
        out.append(Node(host, str(root), str(cwd), [RUN, *vx.run_args(job)], env))
    # all nodes share one root (the bucket mount); /etc/hosts lives in it
    out[0].files["etc/hosts"] = _hosts_file(hosts)
    dirs = vx.output_dirs(base)
    return Layout(out, copies, str(root / vx.mount_path(dirs[vx.MODEL_DIR_VAR]).strip("/")),
                  str(root / vx.mount_path(dirs[vx.CHECKPOINT_DIR_VAR]).strip("/")), job)


def azure(job_dir: Path, job_name: str, job: dict[str, Any], inputs: dict[str, str], nodes: int,
          bundle: str | None, master_port: int) -> Layout:
    mounts = job_dir / "mounts"
    copies = [Copy(src, str(mounts / "inputs" / name)) for name, src in sorted(inputs.items())]
    outputs = {name: str(mounts / "outputs" / name) for name in (az.MODEL_OUTPUT, az.CHECKPOINT_OUTPUT, az.LOG_OUTPUT)}
    seen = {name: _input_path(src, str(mounts / "inputs" / name)) for name, src in inputs.items()}
    args = [RUN, *az.run_args(job, seen, outputs)]
    out: list[Node] = []
    for rank in range(nodes):
        cwd = job_dir / "nodes" / f"node-{rank}"
        if bundle:
            copies.append(Copy(bundle, str(cwd), unpack=True))
        # MASTER_PORT on one node too: torchrun's default port would be shared by every local job on this machine
        env = {az.RUN_ID_VAR: job_name, az.EXPERIMENT_VAR: job["name"], "CLOUDTUNE_FS_ROOT": str(cwd),
               "MASTER_PORT": str(master_port), **mount_env("azure", sorted(outputs.values())),  # rw_mount: blobfuse
               # Azure ML points MLflow at the workspace; here a file store in the job dir takes its place. MLflow 3
               # refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set; a SQLite store would need SQLAlchemy,
               # which the stock environment's mlflow-skinny lacks
               az.MLFLOW_TRACKING_URI_VAR: (job_dir / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
        if nodes > 1:
            # as Azure ML's pytorch distribution with one process per instance: LOCAL_RANK 0 on every node
            env |= {"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": str(nodes), "NODE_RANK": str(rank), "RANK": str(rank),
                    "LOCAL_RANK": "0"}
        out.append(Node(f"node-{rank}", str(cwd), str(cwd), list(args), env))
    return Layout(out, copies, outputs[az.MODEL_OUTPUT], outputs[az.CHECKPOINT_OUTPUT], job)


EMULATORS = {"aws": sagemaker, "gcp": vertex, "azure": azure}
