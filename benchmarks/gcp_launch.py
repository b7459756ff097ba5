"""Benchmark of the Vertex AI launcher, offline.

1. `cloudtune launch job.yaml --provider gcp --dry-run` wall time (a fresh process each run; median), and whether
   that process imported any Google SDK module;
2. a full launch (plan, staging, uploads, CreateCustomJob) through `cloudtune.launch` against the loopback Vertex
   REST fake and gcp-storage-emulator, with a `--data-mb` input: the first launch also fetches the stock-image
   wheelhouse from PyPI (once per machine) and uploads it (once per bucket); a launch with new data of the same size
   then uploads only the data and the code bundle;
3. relaunches of the unchanged job: median time and bytes uploaded (content-addressed: expected 0).

Usage: python benchmarks/gcp_launch.py [--runs 7] [--data-mb 20] [--json]
Needs: cloudtune, cloudtune-gcp[test] (google-cloud-aiplatform, google-cloud-storage, gcp-storage-emulator).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from launch_job import dry_runs, write_job  # noqa: E402
BUCKET = "cloudtune-bench"
PROJECT = "bench-proj"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data-mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudtune-gcp-bench-"))
    job = write_job(work, args.data_mb)
    settings = {"CLOUDTUNE_HOME": str(work / "home"), "CLOUDTUNE_GCP_PROJECT": PROJECT,
                "CLOUDTUNE_GCP_REGION": "us-central1", "CLOUDTUNE_GCP_BUCKET": f"gs://{BUCKET}/ct"}
    dry, imported = dry_runs(job, dict(os.environ, **settings), args.runs, "gcp", ('google.cloud.aiplatform', 'google.cloud.storage', 'google.cloud.logging', 'google.api_core'))

    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    import cloudtune
    from cloudtune.kit.retry import RetryPolicy
    from cloudtune_gcp.launcher import GcpLauncher
    from tests.gcp.conftest import job_client
    from tests.gcp.fake_vertex import FakeVertex

    os.environ.update(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        with FakeVertex() as fake:
            gcs = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
            launcher = GcpLauncher(job_client(fake.url), gcs, None, policy=RetryPolicy())
            t0 = time.perf_counter()
            cloudtune.launch(str(job), provider="gcp", launcher=launcher)
            first_s, first_bytes = time.perf_counter() - t0, launcher.last_uploaded_bytes
            write_job(work / "second", args.data_mb, salt="second")
            t0 = time.perf_counter()
            cloudtune.launch(str(work / "second" / "job.yaml"), provider="gcp", launcher=launcher)
            data_s, data_bytes = time.perf_counter() - t0, launcher.last_uploaded_bytes
            again, again_bytes = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                cloudtune.launch(str(job), provider="gcp", launcher=launcher)
                again.append(time.perf_counter() - t0)
                again_bytes.append(launcher.last_uploaded_bytes)
            jobs = len(fake.jobs)
    finally:
        server.stop()

    result = {
        "dry_run_median_s": round(statistics.median(dry), 3), "dry_run_runs": len(dry),
        "dry_run_imported_google_sdk": imported,
        "first_launch_s": round(first_s, 3), "first_launch_uploaded_bytes": first_bytes,
        "new_data_launch_s": round(data_s, 3), "new_data_launch_uploaded_bytes": data_bytes,
        "relaunch_median_s": round(statistics.median(again), 3), "relaunch_uploaded_bytes": max(again_bytes),
        "jobs_created": jobs, "data_mb": args.data_mb,
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:30s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
