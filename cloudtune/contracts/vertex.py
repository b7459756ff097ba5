"""Google Vertex AI custom training containers.

Sources: Vertex AI docs, "Environment variables for special Cloud Storage directories" (AIP_MODEL_DIR,
AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR are `<baseOutputDirectory>/model/`, `/checkpoints/`, `/logs/`),
"Cloud Storage as a mounted file system" (gs://BUCKET/PATH is /gcs/BUCKET/PATH), and "Distributed training"
(CLUSTER_SPEC: worker pools `workerpool0`..`workerpool3`, pool 0 the chief with one replica).
"""

from __future__ import annotations

import json

MODEL_DIR_VAR = "AIP_MODEL_DIR"
CHECKPOINT_DIR_VAR = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR_VAR = "AIP_TENSORBOARD_LOG_DIR"
JOB_ID_VAR = "CLOUD_ML_JOB_ID"
CLUSTER_SPEC_VAR = "CLUSTER_SPEC"
GCS_MOUNT = "/gcs"
CHIEF_POOL = "workerpool0"
WORKER_POOL = "workerpool1"
PORT = 2222  # the port CLUSTER_SPEC lists for each replica
JOB_JSON_ARG = "--job-json"  # cloudtune-run's argument carrying the runtime job
UNPACK_DIR = "/tmp/cloudtune"  # where the stock-image bootstrap unpacks cloudtune's files


def bootstrap(unpack_dir: str = UNPACK_DIR) -> str:
    """The stock-image container's command (`sh -c` text): unpack cloudtune's files from the mounted code bundle,
    pip-install the carried wheel, then hand over to cloudtune-run. $1: the bundle's /gcs path, $2: pip flags,
    $3: the wheel's extras, $4: any extra requirement; the rest are cloudtune-run's arguments."""
    return (f'set -e; d={unpack_dir}; mkdir -p $d; tar -xzf "$1" -C $d .cloudtune; '
            'python -m pip install -q --disable-pip-version-check --no-cache-dir $2 "$(ls $d/.cloudtune/*.whl)$3" $4; '
            'shift 4; exec cloudtune-run "$@"')


BOOTSTRAP = bootstrap()


def output_dirs(base_output_uri: str) -> dict[str, str]:
    """The AIP_* variables Vertex sets from `baseOutputDirectory.outputUriPrefix`."""
    base = base_output_uri.rstrip("/")
    return {MODEL_DIR_VAR: f"{base}/model/", CHECKPOINT_DIR_VAR: f"{base}/checkpoints/",
            TENSORBOARD_DIR_VAR: f"{base}/logs/"}


def mount_path(uri: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path (Cloud Storage FUSE); other values unchanged."""
    return f"{GCS_MOUNT}/{uri[len('gs://'):]}" if uri.startswith("gs://") else uri


def hosts(nodes: int) -> list[str]:
    """Replica host names as CLUSTER_SPEC lists them: the chief, then pool 1's replicas."""
    return [f"{CHIEF_POOL}-0"] + [f"{WORKER_POOL}-{i}" for i in range(nodes - 1)]


def cluster_spec(nodes: int, rank: int) -> str:
    """The CLUSTER_SPEC value replica `rank` (0 = chief) sees."""
    names = hosts(nodes)
    cluster: dict[str, list[str]] = {CHIEF_POOL: [f"{names[0]}:{PORT}"]}
    if nodes > 1:
        cluster[WORKER_POOL] = [f"{h}:{PORT}" for h in names[1:]]
    task = {"type": CHIEF_POOL, "index": 0} if rank == 0 else {"type": WORKER_POOL, "index": rank - 1}
    return json.dumps({"cluster": cluster, "environment": "cloud", "task": task}, sort_keys=True)


def run_args(job: dict[str, object]) -> list[str]:
    """cloudtune-run's arguments on Vertex: the runtime job travels on the command line."""
    return [JOB_JSON_ARG, json.dumps(job, sort_keys=True)]
