"""CLI start-up: median wall time of `cloudtune --help` and of `launch --dry-run --json` on each provider (local,
aws, gcp, azure), and the heavy modules each imports (there must be none). Given several source trees (checkouts),
it measures them side by side in one run, alternating between them on every repetition, so that a busy machine
slows each tree alike.

    python examples/quickstart/prepare.py              # once: the tiny model the dry run hashes
    python benchmarks/cli_startup.py [--runs 15] [--tree PATH ...] [--models DIR]

Each tree runs as `python -c 'from cloudtune.cli import main; main()'` with PYTHONPATH set to the tree and its three
launcher plugins (launchers/<cloud>), the quickstart spec with placeholder cloud settings (the dry run is pure: no
network, no credentials). Without --tree, the checkout this script is in. Prints one JSON object.
Targets: --help < 0.15 s, local dry run < 0.5 s (2-core machine).
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

HEAVY = ("torch", "transformers", "datasets", "diffusers", "optuna", "boto3", "botocore", "sagemaker",
         "google.cloud", "azure")
ROOT = Path(__file__).resolve().parent.parent
RUN_CLI = "import sys; from cloudtune.cli import main; sys.argv[0] = 'cloudtune'; main()"
PROVIDERS = ("local", "aws", "gcp", "azure")
SETTINGS = """providers:
  local: {emulate: aws}
  aws: {region: us-east-1, role: 'arn:aws:iam::123456789012:role/SageMakerExecution', bucket: cloudtune-bench}
  gcp: {project: bench-project, region: us-central1, bucket: cloudtune-bench}
  azure: {subscription_id: 00000000-0000-0000-0000-000000000000, resource_group: bench-rg, workspace: bench-ws}
"""


def tree_env(tree: Path, home: str) -> dict[str, str]:
    paths = [str(tree), *(str(tree / "launchers" / cloud) for cloud in ("aws", "gcp", "azure"))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), CLOUDTUNE_HOME=home, PYTHONDONTWRITEBYTECODE="1")


def spec_file(workdir: Path, models: Path) -> Path:
    """The quickstart spec, its data and model linked beside it, with every provider's settings."""
    quick = ROOT / "examples" / "quickstart"
    (workdir / "data").symlink_to(quick / "data", target_is_directory=True)
    (workdir / "models").symlink_to(models, target_is_directory=True)
    text = (quick / "job.yaml").read_text().replace("providers: {local: {emulate: aws}}\n", SETTINGS)
    path = workdir / "job.yaml"
    path.write_text(text)
    return path


def commands(spec: Path) -> dict[str, list[str]]:
    out = {"help": ["--help"]}
    for provider in PROVIDERS:
        out[f"dry_run_{provider}"] = ["launch", str(spec), "--provider", provider, "--dry-run", "--json"]
    return out


def once(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN_CLI, *args], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports(args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", RUN_CLI, *args], env=env, cwd=cwd,
                         capture_output=True, text=True)
    mods = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    return sorted(m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--models", type=Path, default=ROOT / "examples/quickstart/models",
                        help="the quickstart's models directory (examples/quickstart/prepare.py writes it)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    if not (args.models / "tiny-gpt2").exists():
        sys.exit("run `python examples/quickstart/prepare.py` first (the dry run hashes the model it would upload)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = spec_file(work, args.models.resolve())
        cmds = commands(spec)
        envs = {t: tree_env(t, str(work / f"home-{i}")) for i, t in enumerate(trees)}
        for tree in trees:  # warm the bytecode and wheel caches once, outside the timing
            for cmd in cmds.values():
                once(cmd, envs[tree], work)
        times: dict[Path, dict[str, list[float]]] = {t: {name: [] for name in cmds} for t in trees}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                for tree in trees:
                    times[tree][name].append(once(cmd, envs[tree], work))
        result = {
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "runs": args.runs,
            "trees": {str(t): {**{f"{name}_median_s": round(statistics.median(v), 4) for name, v in times[t].items()},
                               **{f"{name}_heavy_imports": heavy_imports(cmd, envs[t], work)
                                  for name, cmd in cmds.items()}}
                      for t in trees},
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
