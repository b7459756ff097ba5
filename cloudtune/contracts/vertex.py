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


# Vertex AI restarts a worker that exits non-zero (up to 5 times per worker, then the whole job up to 3 times) unless
# the error is one it treats as permanent (Vertex AI docs, "Understand the training service": "Restart workers
# during the training job"). Exit classes cloudtune never retries (cloudtune.runtime.exitcodes: input 65, diverged
# 66, error = any other code up to 128) must not run again: the first such exit is written to a marker in the job's
# checkpoint dir (AIP_CHECKPOINT_DIR, through the /gcs mount), and a restarted worker that finds it exits at once
# with the same code. Retried classes (infrastructure 75, preempted 143 and any other signal, > 128) run again and
# resume from the newest checkpoint. The marker is the job's own (named by CLOUD_ML_JOB_ID, the same for every
# restart of one job): a new job resumed from this one's checkpoint dir (`cloudtune launch --resume`) runs. SIGTERM (a Spot reclaim, a cancel) is passed on to cloudtune-run, which the
# shell runs as a child so that it can read its exit; the trap is set first, so a SIGTERM before the child runs
# exits 143 (preempted, retried) at once instead of killing the shell mid-command.
FINAL_EXIT_MARKER = ".cloudtune-final-exit"
RUN_ONCE = (
    'p=""; trap \'if [ -n "$p" ]; then kill -TERM $p 2>/dev/null; else exit 143; fi\' TERM INT; '
    'f=""; case "${AIP_CHECKPOINT_DIR:-}" in gs://*) f="/gcs/${AIP_CHECKPOINT_DIR#gs://}";; ?*) f="$AIP_CHECKPOINT_DIR";; '
    f'esac; [ -n "$f" ] && f="${{f%/}}/{FINAL_EXIT_MARKER}-${{{JOB_ID_VAR}:-job}}"; '
    'if [ -n "$f" ] && [ -f "$f" ]; then c=$(cat "$f"); echo "[cloudtune] not run again: an earlier attempt of this '
    'job exited $c, an exit class that is never retried" >&2; exit "$c"; fi; '
    'cloudtune-run "$@" & p=$!; '
    'while :; do wait $p; c=$?; kill -0 $p 2>/dev/null || break; done; '
    'if [ -n "$f" ] && [ "$c" -ne 0 ] && [ "$c" -ne 75 ] && [ "$c" -le 128 ]; then '
    'mkdir -p "$(dirname "$f")" && echo "$c" > "$f"; fi; exit "$c"'
)


def bootstrap(unpack_dir: str = UNPACK_DIR) -> str:
    """The stock-image container's command (`sh -c` text): unpack cloudtune's files from the mounted code bundle,
    pip-install the carried wheel, then hand over to cloudtune-run (RUN_ONCE). $1: the bundle's /gcs path, $2: pip
    flags, $3: the wheel's extras, $4: any extra requirement; the rest are cloudtune-run's arguments."""
    return (f'set -e; d={unpack_dir}; mkdir -p $d; tar -xzf "$1" -C $d .cloudtune; '
            'python -m pip install -q --disable-pip-version-check --no-cache-dir $2 "$(ls $d/.cloudtune/*.whl)$3" $4; '
            f'shift 4; set +e; {RUN_ONCE}')


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


# Machine series whose boot disk is Hyperdisk (they take no Persistent Disk). Source: aiplatform_v1 DiskSpec
# reference: "For non-A3U machines, the default value is pd-ssd, for A3U machines ... hyperdisk-balanced".
HYPERDISK_SERIES = ("a3-ultragpu-",)


def boot_disk_type(machine_type: str) -> str:
    """The boot disk type a worker pool of `machine_type` requests (DiskSpec.bootDiskType)."""
    return "hyperdisk-balanced" if machine_type.startswith(HYPERDISK_SERIES) else "pd-ssd"
