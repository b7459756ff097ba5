"""Benchmark of the SageMaker launcher, offline.

1. `cloudtune launch job.yaml --provider aws --dry-run` wall time (a fresh process each run; median);
2. a full launch (plan, uploads, CreateTrainingJob) through `cloudtune.launch` against moto's server on
   127.0.0.1: the first one also fetches the stock-image wheelhouse from PyPI (once per machine) and uploads it
   (once per bucket); then a launch with new data of the same size, which uploads only the data and the bundle;
3. bytes uploaded by a relaunch of the unchanged job (content-addressed uploads: expected 0).

Usage: python launchers/aws/benchmarks/launch_bench.py [--runs 7] [--data-mb 20] [--json]
Needs: cloudtune, cloudtune-aws, boto3, moto[server].
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
BUCKET = "cloudtune-bench"
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from launch_job import write_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data-mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudtune-aws-bench-"))
    job = write_job(work, args.data_mb)
    env = dict(os.environ, CLOUDTUNE_HOME=str(work / "home"), CLOUDTUNE_AWS_ROLE=ROLE, CLOUDTUNE_AWS_BUCKET=BUCKET,
               AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("AWS_ENDPOINT_URL", None)

    # 1. dry run, fresh process each time (the first one also builds the cached wheel)
    cli = [sys.executable, "-c", "from cloudtune.cli import main; main()", "launch", str(job), "--provider", "aws", "--dry-run", "--json"]
    dry: list[float] = []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        subprocess.run(cli, env=env, check=True, capture_output=True)
        if i:  # run 0 warms the wheel and bundle caches
            dry.append(time.perf_counter() - t0)

    # 2./3. full launches against moto
    os.environ.update({k: env[k] for k in ("CLOUDTUNE_HOME", "CLOUDTUNE_AWS_ROLE", "CLOUDTUNE_AWS_BUCKET", "AWS_REGION")})
    os.environ["MOTO_RECORDER_FILEPATH"] = str(work / "moto_recording")
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    import cloudtune
    from cloudtune_aws.launcher import AwsLauncher

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"})
        clients = {"session": session, "sagemaker_client": session.client("sagemaker", endpoint_url=endpoint, config=cfg),
                   "s3_client": session.client("s3", endpoint_url=endpoint, config=cfg)}
        clients["s3_client"].create_bucket(Bucket=BUCKET)
        launcher = AwsLauncher(**clients)
        t0 = time.perf_counter()
        first = cloudtune.launch(str(job), provider="aws", launcher=launcher)
        first_s = time.perf_counter() - t0
        first_bytes = launcher.last_uploaded_bytes
        second = write_job(work / "second", args.data_mb, salt="second")
        t0 = time.perf_counter()
        cloudtune.launch(str(second), provider="aws", launcher=launcher)
        data_s, data_bytes = time.perf_counter() - t0, launcher.last_uploaded_bytes
        again: list[float] = []
        again_bytes: list[int] = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            cloudtune.launch(str(job), provider="aws", launcher=launcher)
            again.append(time.perf_counter() - t0)
            again_bytes.append(launcher.last_uploaded_bytes)
        jobs = len(clients["sagemaker_client"].list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    finally:
        server.stop()

    result = {
        "dry_run_median_s": round(statistics.median(dry), 3),
        "dry_run_runs": len(dry),
        "first_launch_s": round(first_s, 3),
        "first_launch_uploaded_bytes": first_bytes,
        "new_data_launch_s": round(data_s, 3),
        "new_data_launch_uploaded_bytes": data_bytes,
        "relaunch_median_s": round(statistics.median(again), 3),
        "relaunch_uploaded_bytes": max(again_bytes),
        "jobs_created": jobs,
        "first_job": first.job_id,
        "data_mb": args.data_mb,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:30s} {v}")


if __name__ == "__main__":
    main()
