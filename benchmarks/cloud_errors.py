"""How long each cloud error takes to reach the user, through the real CLI with the default retry policy.

    python benchmarks/cloud_errors.py [--deadline SECONDS]

Every endpoint is on 127.0.0.1 (a closed port, a server that always answers 500, 503 or 403, or one that accepts
and never answers); nothing leaves
this machine. Prints one row per case: the command, the exit code, the seconds it took, the retry lines printed
and the error line. `--deadline` sets CLOUDTUNE_RETRY_DEADLINE (default: unset, the kit's 60 s policy)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cloudfaults import BlackHole, FaultServer, cli, closed_port  # noqa: E402

SPEC = """name: errs
command: python train.py
code: code
image: {image}
resources: {{accelerator: L4:1}}
providers:
  aws: {{region: us-east-1, role: "arn:aws:iam::123456789012:role/SageMakerExecution", bucket: errs-bucket}}
  gcp: {{project: ml-proj, region: us-central1, bucket: "gs://errs-bucket/ct"}}
"""


def _running(home: Path, provider: str) -> str:
    import time

    from cloudtune.store import JobRecord, JobStore

    name = f"errs-{provider}-20260101-000000-abcd"
    native = (f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}" if provider == "aws"
              else "projects/ml-proj/locations/us-central1/customJobs/1001")
    extra = {"region": "us-east-1", "job_name": name} if provider == "aws" else \
        {"project": "ml-proj", "region": "us-central1", "job_name": name}
    now = time.time()
    JobStore(home).add(JobRecord(job_id=name, provider=provider, name="errs", state="running", created_at=now,
                                 updated_at=now, native_id=native, extra=extra))
    return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cloudtune-errors-"))
    (work / "code").mkdir()
    (work / "code/train.py").write_text("print(1)\n")
    (work / "userhome").mkdir()
    for provider, image in (("aws", "123456789012.dkr.ecr.us-east-1.amazonaws.com/ct:1"),
                            ("gcp", "us-docker.pkg.dev/ml-proj/ct/ct:1")):
        (work / f"{provider}.yaml").write_text(SPEC.format(image=image))
    home = work / "ct"
    jobs = {p: _running(home, p) for p in ("aws", "gcp")}
    metadata = f"127.0.0.1:{closed_port()}"
    base = {"CLOUDTUNE_HOME": str(home), "HOME": str(work / "userhome"), "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
            "CLOUDSDK_CONFIG": str(work / "none"), "GCE_METADATA_HOST": metadata, "GCE_METADATA_IP": metadata}
    if args.deadline is not None:
        base["CLOUDTUNE_RETRY_DEADLINE"] = str(args.deadline)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    closed = f"http://127.0.0.1:{closed_port()}"

    def aws(endpoint: str | None, with_creds: bool = True) -> dict[str, str]:
        return {**base, **(creds if with_creds else {}), **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}

    def gcp(storage: str | None = None, vertex: str | None = None) -> dict[str, str]:
        return {**base, **({"STORAGE_EMULATOR_HOST": storage} if storage else {}),
                **({"CLOUDTUNE_GCP_API_ENDPOINT": vertex} if vertex else {})}

    launch = {p: ("launch", f"{p}.yaml", "--provider", p, "--detach") for p in ("aws", "gcp")}
    print(f"{'case':<44} {'rc':>2} {'seconds':>7} {'retries':>7}  error")
    with FaultServer("500") as s500, FaultServer("503") as s503, FaultServer("403") as s403, BlackHole() as hole:
        cases = [
            ("aws launch, no credentials", launch["aws"], aws(closed, with_creds=False)),
            ("aws launch, closed port", launch["aws"], aws(closed)),
            ("aws launch, always 500", launch["aws"], aws(s500.url)),
            ("aws launch, always 503", launch["aws"], aws(s503.url)),
            ("aws launch, 403 AccessDenied", launch["aws"], aws(s403.url)),
            ("aws status, closed port", ("status", jobs["aws"]), aws(closed)),
            ("aws logs, closed port", ("logs", jobs["aws"]), aws(closed)),
            ("aws logs --follow, always 503", ("logs", jobs["aws"], "--follow"), aws(s503.url)),
            ("aws cancel, closed port", ("cancel", jobs["aws"]), aws(closed)),
            ("gcp launch, no credentials", launch["gcp"], gcp()),
            ("gcp launch, storage closed port", launch["gcp"], gcp(storage=closed)),
            ("gcp launch, storage always 500", launch["gcp"], gcp(storage=s500.url)),
            ("gcp launch, storage 403", launch["gcp"], gcp(storage=s403.url)),
            ("gcp status, Vertex closed port", ("status", jobs["gcp"]), gcp(vertex=closed)),
            ("gcp logs, Vertex closed port", ("logs", jobs["gcp"]), gcp(vertex=closed)),
            ("gcp logs --follow, always 503", ("logs", jobs["gcp"], "--follow"), gcp(vertex=s503.url)),
            ("gcp cancel, Vertex 403", ("cancel", jobs["gcp"]), gcp(vertex=s403.url)),
            ("aws status, accepts and never answers", ("status", jobs["aws"]), aws(hole.url)),
            ("gcp status, accepts and never answers", ("status", jobs["gcp"]), gcp(vertex=hole.url)),
        ]
        for name, argv, env in cases:
            run = cli(*argv, cwd=work, env=env, timeout=300)
            retries = run.err.count("retrying in")
            error = next((line for line in run.err.splitlines() if line.startswith("error: ")), "(none)")
            tb = " TRACEBACK" if "Traceback" in run.err else ""
            print(f"{name:<44} {run.rc:>2} {run.seconds:>7.1f} {retries:>7}  {error[:110]}{tb}", flush=True)


if __name__ == "__main__":
    main()
