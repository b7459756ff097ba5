"""Benchmark of the Azure Machine Learning launcher, offline.

1. `cloudtune launch job.yaml --provider azure --dry-run` wall time (a fresh process each run; median), and whether
   that process imported any `azure` module (the SDKs are imported lazily: expected False);
2. a full launch (plan, staging, uploads, code asset, job PUT) through `cloudtune.launch` against the loopback Azure
   ML workspace fake (tests/azure/fake_azureml.py) and Azurite, with a `--data-mb` input: the first launch also
   fetches the stock-image wheelhouse from PyPI into the cache and uploads it (once per datastore); a launch with
   new data of the same size then uploads only the data and the code bundle;
3. relaunches of the unchanged job: median time and bytes uploaded (content-addressed: expected 0); one job is
   created per launch.

The job (benchmarks/launch_job.py) asks for an L4, which Azure ML's catalog lacks: every launch here overrides
resources.accelerator to T4:1. Without network (PyPI unreachable) the wheelhouse is a stand-in lock served from
127.0.0.1 (as tests/wheelhouse.py does); the output says which one was used.

Usage: python benchmarks/azure_launch.py [--runs 7] [--data-mb 20] [--json] [--profile FILE]
Needs: cloudtune, cloudtune-azure[test] (azure-ai-ml, azure-storage-blob), Azurite (npm ci --prefix tests/azure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from launch_job import dry_runs, write_job  # noqa: E402

ACCELERATOR = "resources.accelerator=T4:1"  # launch_job.py's L4 is not in Azure ML's catalog


def pypi_reachable() -> bool:
    """Whether the first wheel of the shipped Azure ML lock can be fetched (a HEAD request, 5 s)."""
    from cloudtune.kit.bootstrap import load_lock

    url = load_lock("azureml-acpt-py310").wheels[0].url
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5):
            return True
    except OSError:
        return False


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def stand_in_locks(work: Path) -> tuple[Path, ThreadingHTTPServer]:
    """Stand-in wheel locks (tests/wheelhouse.py) whose wheels are served from 127.0.0.1."""
    from tests.wheelhouse import write_locks

    served = work / "served-wheels"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    write_locks(served, work / "locks", f"http://127.0.0.1:{server.server_address[1]}")
    return work / "locks", server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data-mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="write cProfile stats of the new-data launch to FILE")
    args = ap.parse_args()

    try:  # the plugin is normally installed (pip install -e launchers/azure); a bare checkout works too
        import cloudtune_azure  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "launchers" / "azure"))
    from tests.azure.conftest import _AzuriteProcess, azurite_binary, mlclient_kwargs
    from tests.azure.fake_azureml import (ARTIFACT_CONTAINER, AZURITE_ACCOUNT, AZURITE_KEY, BLOBSTORE_CONTAINER,
                                          RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, FakeAzureML)

    binary = azurite_binary()
    if binary is None or shutil.which("node") is None:
        raise SystemExit("Azurite (azurite-blob, on Node.js) is not installed: npm ci --prefix tests/azure")

    work = Path(tempfile.mkdtemp(prefix="cloudtune-azure-bench-"))
    job = write_job(work, args.data_mb)
    settings = {"CLOUDTUNE_HOME": str(work / "home"), "CLOUDTUNE_AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
                "CLOUDTUNE_AZURE_RESOURCE_GROUP": RESOURCE_GROUP, "CLOUDTUNE_AZURE_WORKSPACE": WORKSPACE}
    dry, imported = dry_runs(job, dict(os.environ, **settings), args.runs, "azure", ('azure',), ('--set', ACCELERATOR))

    import cloudtune
    from azure.ai.ml import MLClient
    from azure.storage.blob import BlobServiceClient

    from cloudtune.kit.retry import RetryPolicy
    from cloudtune_azure.launcher import AzureLauncher

    os.environ.update(settings)
    os.environ["AZUREML_CURRENT_CLOUD"] = "AzureCloud"
    for var in ("ARM_CLOUD_METADATA_URL", "REGISTRY_DISCOVERY_ENDPOINT_URL"):
        os.environ.pop(var, None)  # either would make the SDK fetch from a real endpoint

    online = pypi_reachable()
    wheel_server = None
    lock_dir = None
    if not online:
        lock_dir, wheel_server = stand_in_locks(work)
    azurite = _AzuriteProcess(binary)  # 127.0.0.1, its own process group; stopped by PID below
    try:
        with BlobServiceClient(azurite.url, credential={"account_name": AZURITE_ACCOUNT,
                                                        "account_key": AZURITE_KEY}) as service:
            for container in (BLOBSTORE_CONTAINER, ARTIFACT_CONTAINER):
                service.create_container(container)
        os.environ["CLOUDTUNE_AZURE_BLOB_ENDPOINT"] = azurite.url
        os.environ["CLOUDTUNE_AZURE_STORAGE_KEY"] = AZURITE_KEY
        with FakeAzureML(blob_endpoint=azurite.url, account_key=AZURITE_KEY) as fake:
            os.environ["AZUREML_DEV_URL_MFE"] = fake.url
            client = MLClient(**mlclient_kwargs(fake), retry_total=0)
            launcher = AzureLauncher(client, policy=RetryPolicy(), lock_dir=lock_dir)
            launch = partial(cloudtune.launch, provider="azure", launcher=launcher, overrides=[ACCELERATOR])

            t0 = time.perf_counter()
            launch(str(job))
            first_s, first_bytes = time.perf_counter() - t0, launcher.last_uploaded_bytes
            write_job(work / "second", args.data_mb, salt="second")
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            t0 = time.perf_counter()
            launch(str(work / "second" / "job.yaml"))
            data_s, data_bytes = time.perf_counter() - t0, launcher.last_uploaded_bytes
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            again, again_bytes = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                launch(str(job))
                again.append(time.perf_counter() - t0)
                again_bytes.append(launcher.last_uploaded_bytes)
            jobs, job_puts, code_assets = len(fake.jobs), len(fake.job_puts()), len(fake.codes)
            errors = list(fake.errors)
    finally:
        azurite.stop()
        if wheel_server is not None:
            wheel_server.shutdown()
            wheel_server.server_close()
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        raise SystemExit(f"the Azure ML fake failed inside: {errors}")

    result = {
        "dry_run_median_s": round(statistics.median(dry), 3), "dry_run_runs": len(dry),
        "dry_run_imported_azure_sdk": imported,
        "wheelhouse": "shipped lock, wheels from PyPI" if online else "stand-in lock on 127.0.0.1 (PyPI unreachable)",
        "first_launch_s": round(first_s, 3), "first_launch_uploaded_bytes": first_bytes,
        "new_data_launch_s": round(data_s, 3), "new_data_launch_uploaded_bytes": data_bytes,
        "relaunch_median_s": round(statistics.median(again), 3), "relaunch_uploaded_bytes": max(again_bytes),
        "launches": 2 + len(again), "jobs_created": jobs, "job_puts": job_puts, "code_assets": code_assets,
        "data_mb": args.data_mb,
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:30s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
