"""Detect which cloud's container contract we are in and normalise it into one RuntimeContext.

Every absolute path of a contract (`/opt/ml/...`, `/gcs/...`) is read under a filesystem root,
`CLOUDTUNE_FS_ROOT` (default `/`). On a cloud the root is `/`; the local launcher lays the same tree
out under a job directory and points the root there, so the code below is the code the cloud runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune.contracts import azureml as az, sagemaker as sm, vertex as vx
from cloudtune.runtime import trial
from cloudtune.runtime.types import RuntimeContext

DEFAULT_MASTER_PORT = 29500
SM_CONFIG = sm.CONFIG_DIR
SM_JOB_KEY = sm.JOB_KEY


class ContractError(RuntimeError):
    """The container contract is incomplete (a file or variable the cloud should have set is missing)."""


@dataclass
class RunArgs:
    """What `cloudtune-run` received on its command line (Vertex/Azure pass everything this way)."""

    job_json: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    model_dir: str | None = None
    checkpoint_dir: str | None = None
    log_dir: str | None = None
    trial: dict[str, str] = field(default_factory=dict)  # a sweep trial's `--name=value` arguments (runtime.trial)


def fs_root(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CLOUDTUNE_FS_ROOT", "/"))


def under_root(root: Path, absolute: str) -> Path:
    """Map an absolute contract path (e.g. /opt/ml/model) to its place under `root`."""
    return root / absolute.lstrip("/")


def detect_provider(environ: Mapping[str, str]) -> str:
    """aws if SageMaker's config files exist; gcp if Vertex variables are set; azure if Azure ML's are; else bare."""
    root = fs_root(environ)
    if (under_root(root, SM_CONFIG) / "resourceconfig.json").is_file():
        return "aws"
    if vx.JOB_ID_VAR in environ or vx.MODEL_DIR_VAR in environ:
        return "gcp"
    if az.RUN_ID_VAR in environ:
        return "azure"
    return "bare"


def resolve_host(name: str, root: Path) -> str:
    """Resolve a host name through `<root>/etc/hosts` when emulating; on a cloud, DNS does it."""
    if str(root) == "/":
        return name
    hosts_file = under_root(root, "etc/hosts")
    if hosts_file.is_file():
        for line in hosts_file.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2 and name in parts[1:]:
                return parts[0]
    return name


def gcs_to_local(uri: str, root: Path) -> Path:
    """gs://bucket/path -> /gcs/bucket/path (Cloud Storage FUSE mount on Vertex AI)."""
    if uri.startswith("gs://"):
        return under_root(root, vx.mount_path(uri))
    if uri.startswith(vx.GCS_MOUNT + "/"):
        return under_root(root, uri)
    return Path(uri)


def _job(args: RunArgs, fallback: str | None, hyperparameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The runtime job, with a sweep trial's values applied (cloudtune.runtime.trial): from SageMaker's
    `hyperparameters`, or from cloudtune-run's `--name=value` arguments (Vertex AI, Azure ML)."""
    raw = args.job_json or fallback
    if not raw:
        raise ContractError("no job config: pass --job-json (Vertex/Azure) or set hyperparameter cloudtune_job (SageMaker)")
    if not raw.lstrip().startswith("{") and Path(raw).is_file():
        raw = Path(raw).read_text()
    job = json.loads(raw)
    if args.trial and not job.get("sweep"):
        raise ContractError(f"unexpected arguments {', '.join(f'--{k}' for k in sorted(args.trial))}: the job is no "
                            "sweep's trial")
    return trial.apply(job, {**trial.from_hyperparameters(hyperparameters or {}), **args.trial})


def _ppn(job: dict[str, Any], environ: Mapping[str, str]) -> int:
    return int(environ.get("CLOUDTUNE_PROCESSES_PER_NODE") or job.get("processes_per_node") or 1)


def _master_port(environ: Mapping[str, str]) -> int:
    return int(environ.get("MASTER_PORT") or DEFAULT_MASTER_PORT)


def _from_sagemaker(args: RunArgs, environ: Mapping[str, str]) -> RuntimeContext:
    root = fs_root(environ)
    config = under_root(root, SM_CONFIG)
    resource = json.loads((config / "resourceconfig.json").read_text())
    hyper_file = config / "hyperparameters.json"
    hyper = json.loads(hyper_file.read_text()) if hyper_file.is_file() else {}
    job = _job(args, hyper.get(SM_JOB_KEY), hyper)
    hosts = tuple(resource["hosts"])
    name = environ.get(sm.JOB_NAME_VAR, job.get("name", "job"))
    # a tuning job's trials share one CheckpointConfig S3 prefix: each keeps its checkpoints under its own name
    checkpoints = under_root(root, sm.CHECKPOINT_DIR) / (name if "trial" in job else "")
    current = resource["current_host"]
    data_root = under_root(root, sm.DATA_DIR)
    inputs = {name: data_root / name for name in job.get("inputs", {})}
    script_mode = under_root(root, sm.CODE_DIR)  # the stock image: the toolkit extracted the bundle here
    code = data_root / sm.CODE_CHANNEL if (data_root / sm.CODE_CHANNEL).is_dir() else (
        script_mode if script_mode.is_dir() and any(script_mode.iterdir()) else None)
    return RuntimeContext(
        provider="aws",
        job_name=name,
        inputs=inputs,
        model_dir=under_root(root, sm.MODEL_DIR),
        checkpoint_dir=checkpoints,
        log_dir=under_root(root, sm.TENSORBOARD_DIR),
        code_dir=code,
        node_rank=hosts.index(current),
        num_nodes=len(hosts),
        processes_per_node=_ppn(job, environ),
        master_addr=resolve_host(hosts[0], root),
        master_port=_master_port(environ),
        hosts=hosts,
        job=job,
        failure_file=under_root(root, sm.FAILURE_FILE),
    )


def _from_vertex(args: RunArgs, environ: Mapping[str, str]) -> RuntimeContext:
    root = fs_root(environ)
    job = _job(args, None)
    spec = json.loads(environ.get(vx.CLUSTER_SPEC_VAR) or "{}")
    cluster: dict[str, list[str]] = spec.get("cluster", {vx.CHIEF_POOL: [f"localhost:{vx.PORT}"]})
    task = spec.get("task", {"type": vx.CHIEF_POOL, "index": 0})
    pools = sorted(cluster)
    hosts = tuple(h for pool in pools for h in cluster[pool])
    rank = 0
    for pool in pools:
        if pool == task["type"]:
            rank += int(task["index"])
            break
        rank += len(cluster[pool])
    chief = cluster[pools[0]][0].rsplit(":", 1)[0]

    def need(var: str) -> Path:
        if var not in environ:
            raise ContractError(f"{var} is not set; set base_output_directory on the CustomJob")
        return gcs_to_local(environ[var], root)

    code_uri = job.get("code_uri")
    return RuntimeContext(
        provider="gcp",
        job_name=environ.get(vx.JOB_ID_VAR, job.get("name", "job")),
        inputs={name: gcs_to_local(uri, root) for name, uri in job.get("inputs", {}).items()},
        model_dir=need(vx.MODEL_DIR_VAR),
        checkpoint_dir=need(vx.CHECKPOINT_DIR_VAR),
        log_dir=need(vx.TENSORBOARD_DIR_VAR),
        code_dir=gcs_to_local(code_uri, root) if code_uri else None,
        node_rank=rank,
        num_nodes=len(hosts),
        processes_per_node=_ppn(job, environ),
        master_addr=resolve_host(chief, root),
        master_port=_master_port(environ),
        hosts=tuple(h.rsplit(":", 1)[0] for h in hosts),
        job=job,
    )


def _from_azure(args: RunArgs, environ: Mapping[str, str]) -> RuntimeContext:
    job = _job(args, None)
    missing = [n for n in job.get("inputs", {}) if n not in args.inputs]
    if missing:
        raise ContractError(f"inputs {missing} were not passed; the command must carry --input NAME=${{{{inputs.NAME}}}}")
    if not args.model_dir or not args.checkpoint_dir:
        raise ContractError("--model-dir ${{outputs.model}} and --checkpoint-dir ${{outputs.checkpoints}} are required on Azure ML")
    cwd = Path.cwd()
    nodes = int(environ.get("WORLD_SIZE", "1"))
    rank = int(environ.get("NODE_RANK", environ.get("RANK", "0")))
    master = environ.get("MASTER_ADDR", "127.0.0.1")
    return RuntimeContext(
        provider="azure",
        job_name=environ.get(az.RUN_ID_VAR, job.get("name", "job")),
        inputs={k: Path(v) for k, v in args.inputs.items() if k in job.get("inputs", {})},
        model_dir=Path(args.model_dir),
        checkpoint_dir=Path(args.checkpoint_dir),
        log_dir=Path(args.log_dir) if args.log_dir else cwd / "logs",
        code_dir=cwd,
        node_rank=rank,
        num_nodes=nodes,
        processes_per_node=_ppn(job, environ),
        master_addr=master,
        master_port=_master_port(environ),
        hosts=tuple([master] + [f"node-{i}" for i in range(1, nodes)]),
        job=job,
    )


def _from_bare(args: RunArgs, environ: Mapping[str, str]) -> RuntimeContext:
    job = _job(args, None)
    cwd = Path.cwd()
    return RuntimeContext(
        provider="bare",
        job_name=job.get("name", "job"),
        inputs={k: Path(v) for k, v in (job.get("inputs", {}) | args.inputs).items()},
        model_dir=Path(args.model_dir or cwd / "model"),
        checkpoint_dir=Path(args.checkpoint_dir or cwd / "checkpoints"),
        log_dir=Path(args.log_dir or cwd / "logs"),
        code_dir=cwd,
        node_rank=int(environ.get("NODE_RANK", "0")),
        num_nodes=int(environ.get("NNODES", "1")),
        processes_per_node=_ppn(job, environ),
        master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_master_port(environ),
        hosts=(environ.get("MASTER_ADDR", "127.0.0.1"),),
        job=job,
    )


_READERS = {"aws": _from_sagemaker, "gcp": _from_vertex, "azure": _from_azure, "bare": _from_bare}


def detect(args: RunArgs | None = None, environ: Mapping[str, str] | None = None) -> RuntimeContext:
    """Build the RuntimeContext of this container from its provider's contract."""
    env = os.environ if environ is None else environ
    return _READERS[detect_provider(env)](args or RunArgs(), env)
