"""`providers.local.runtime: image`: a local job on the emulated cloud's software, without Docker.

Two layers, as in the cloud's container:
- the image: a virtual environment with the target's Python (found under pyenv or on PATH), the image's torch
  (downloaded once from PyPI: a CUDA build, which also runs on CPU) and the target's wheel lock installed from
  the wheelhouse with `pip install --no-index`. Built once and cached under `$CLOUDTUNE_HOME/image-envs/<key>`,
  key = Python version + torch version + the lock's sha256; a marker file written last makes it complete.
- the job's container: per node a fresh, empty virtual environment of the same Python whose `image.pth` puts the
  image's site-packages on its path. The cloud's own start path runs in it (the text comes from
  `cloudtune.contracts`, the code that also writes the cloud request): unpack the bundle, install cloudtune from
  the wheelhouse with `--no-index`, SageMaker's script-mode steps and `entry.py`, then `cloudtune-run`.
  Whatever the job installs lands in its node's environment; the cached image is never written by a job.

pip runs with PIP_CONFIG_FILE=/dev/null (this machine's pip configuration, its find-links and constraints, is not
the image's), except for the one download of torch, which goes where this machine's pip goes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from cloudtune.contracts import azureml as az, sagemaker as sm, vertex as vx
from cloudtune.errors import CloudtuneError, InvalidInput
from cloudtune.kit import pythons, staging
from cloudtune.kit.bootstrap import LOCK_DIR, TARGETS, load_lock
from cloudtune.local.mounts import HOOK_DIR, MOUNTS_VAR

ENV_DIR = "image-envs"
MARKER = "cloudtune-image-env.json"  # written last: the image env is complete
PTH = "image.pth"
BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ImageTarget:
    """What the emulated image runs: its Python (major.minor), its torch (None: the lock needs none) and its lock."""

    name: str
    python: str
    torch: str | None
    lock_sha256: str
    lock_dir: str | None  # None: the locks shipped with cloudtune

    @property
    def key(self) -> str:
        return f"py{self.python}-torch{self.torch or 'none'}-{self.lock_sha256[:16]}"


def image_target(target: str, lock_dir: Path | None = None) -> ImageTarget:
    """The image of `target`: Python and torch from the lock file (`python`, `image_torch`), else the target table."""
    lock = load_lock(target, lock_dir)
    data = json.loads(((lock_dir or LOCK_DIR) / f"{target}.json").read_text())
    known = TARGETS.get(target)
    python = data.get("python") or (known.python if known else None)
    torch = data["image_torch"] if "image_torch" in data else (known.torch if known else None)
    if not python:
        raise InvalidInput(f"the wheel lock {target} names no Python version",
                           fix="regenerate it with `python -m cloudtune.kit.lockgen`")
    return ImageTarget(target, str(python), torch, lock.digest()[1], str(lock_dir) if lock_dir else None)


def find_python(version: str) -> Path:
    """An interpreter of Python `version` (major.minor) for the emulated image (`cloudtune.kit.pythons`)."""
    return pythons.find_python(version, why=f"the emulated image runs Python {version}",
                               fix="or set providers.local.runtime: host")


def env_path(home: Path, target: ImageTarget) -> Path:
    return home / ENV_DIR / target.key


def torch_dir(home: Path, target: ImageTarget) -> Path:
    """Where torch's wheels (and its dependencies') are kept: shared by every lock on the same Python and torch."""
    return home / ENV_DIR / "torch" / f"py{target.python}-torch{target.torch}"


def build_steps(python: Path, env: Path, target: ImageTarget, wheelhouse: Path, wheels: list[str],
                torch_wheels: Path, download: bool) -> list[list[str]]:
    """The commands that build the image env (pure). `wheels`: the lock's `name==version` pins."""
    py = str(env / "bin" / "python")
    steps = [[str(python), "-m", "venv", str(env)]]
    if target.torch:
        if download:
            steps.append([py, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(torch_wheels),
                          f"torch=={target.torch}"])
        steps.append([py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(torch_wheels),
                      f"torch=={target.torch}"])
    steps.append([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir", "--no-index",
                  "--find-links", str(wheelhouse), *wheels])
    return steps


def isolated_env(offline: bool = True) -> dict[str, str]:
    """This process' environment without what would leak this machine's Python setup into the image's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA_", "PYENV_VERSION"))}
    env["PYTHONNOUSERSITE"] = "1"
    if offline:
        env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


Say = Callable[[str], None]


def ensure_image_env(home: Path, target: ImageTarget, wheelhouse: Path, say: Say, log: IO[str] | None = None) -> Path:
    """The image env of `target` (built now if not cached). Concurrent builders wait for each other (a file lock).

    Raises CloudtuneError (with the failed command and a fix) when a step fails. Figures of the build (seconds,
    bytes) are kept in its marker file."""
    env = env_path(home, target)
    if (env / MARKER).is_file():
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f"{target.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / MARKER).is_file():
            return env
        shutil.rmtree(env, ignore_errors=True)  # an unfinished build (no marker)
        _build(home, target, wheelhouse, env, say, log)
    return env


def _build(home: Path, target: ImageTarget, wheelhouse: Path, env: Path, say: Say, log: IO[str] | None) -> None:
    python = find_python(target.python)
    lock = load_lock(target.name, Path(target.lock_dir) if target.lock_dir else None)
    pins = [f"{w.name}=={w.version}" for w in lock.wheels]
    tdir = torch_dir(home, target)
    download = bool(target.torch) and not (tdir / ".complete").is_file()
    say(f"building the {target.name} image env ({target.key}): Python {target.python} from {python}, torch "
        f"{target.torch or '(none)'}" + (" (downloading its wheels from PyPI once)" if download else "")
        + f", {len(pins)} locked wheels with --no-index")
    started, figures = time.monotonic(), {}
    for step in build_steps(python, env, target, wheelhouse, pins, tdir, download):
        t0 = time.monotonic()
        is_download = step[3:4] == ["download"]
        _run(step, isolated_env(offline=not is_download), log)
        label = "venv" if step[2] == "venv" else f"pip {step[3]} {'torch' if str(tdir) in step else 'lock'}"
        figures[label] = round(time.monotonic() - t0, 1)
        say(f"image env: {label} done in {figures[label]:.0f} s")
        if is_download:
            (tdir / ".complete").write_text(str(_du(tdir)))
    record = {**asdict(target), "key": target.key, "python_exe": str(python), "seconds": round(time.monotonic() - started, 1),
              "steps_s": figures, "env_bytes": _du(env), "torch_download_bytes": _du(tdir) if target.torch else 0,
              "built_at": time.time()}
    (env / MARKER).write_text(json.dumps(record, indent=2))
    say(f"image env ready in {record['seconds']:.0f} s ({record['env_bytes'] / 1e9:.2f} GB): {env}")


def _run(argv: list[str], env: dict[str, str], log: IO[str] | None) -> None:
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CloudtuneError(f"image env: `{' '.join(argv)}` failed: {exc}",
                             fix="see the job log; set providers.local.runtime: host to run on this machine's Python")
    if log is not None and proc.stdout:
        log.write(proc.stdout)
        log.flush()
    if proc.returncode:
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise CloudtuneError(f"image env: `{' '.join(argv[:6])} ...` exited {proc.returncode}: {tail}",
                             fix="the target's lock or torch cannot be installed on its Python: fix the lock "
                                 "(python -m cloudtune.kit.lockgen), or set providers.local.runtime: host")


def node_env(image: Path, dest: Path, python: Path) -> dict[str, str]:
    """A fresh node environment at `dest` over the cached image (its site-packages through `image.pth`); the
    variables that make `python`, `pip` and the installed `cloudtune-run` resolve to it."""
    shutil.rmtree(dest, ignore_errors=True)
    _run([str(python), "-m", "venv", "--without-pip", str(dest)], isolated_env(), None)
    image_site = sorted(image.glob("lib/python*/site-packages"))
    for site in dest.glob("lib/python*/site-packages"):
        (site / PTH).write_text("".join(f"{p}\n" for p in image_site))
    path = os.pathsep.join([str(dest / "bin"), os.environ.get("PATH", os.defpath)])
    return {"PATH": path, "VIRTUAL_ENV": str(dest), "PYTHONNOUSERSITE": "1", "PIP_CONFIG_FILE": os.devnull}


# ------------------------------------------------------------------------------------------------- the start path
def start_argv(emulate: str, node_argv: list[str], bundle: str, pip_flags: str, extras: str, extra_req: str,
               unpack_dir: str) -> list[str]:
    """The node's command on the image: each cloud's own start path (the texts of `cloudtune.contracts`), with this
    machine's paths for the bundle and the wheelhouse. `node_argv`: the host runtime's `[cloudtune-run, *args]`."""
    if emulate == "aws":  # the toolkit has extracted the bundle into /opt/ml/code: script mode, then entry.py
        return ["/bin/sh", "-c", sm.SCRIPT_MODE, "sagemaker-training-toolkit", sm.ENTRY_SCRIPT]
    if emulate == "gcp":
        return ["/bin/sh", "-c", vx.bootstrap(unpack_dir), "cloudtune-bootstrap", bundle, pip_flags, extras,
                extra_req, *node_argv[1:]]
    return ["sh", "-c", az.BOOTSTRAP, "cloudtune-bootstrap", Path(bundle).name, pip_flags, extras, extra_req,
            *node_argv[1:]]


def extra_requirement(emulate: str, secrets: bool) -> str:
    """What the cloud's start path installs beyond cloudtune (as the gcp and azure requests do)."""
    if emulate == "gcp":
        return "google-cloud-secret-manager" if secrets else ""
    if emulate == "azure":
        return "azureml-mlflow" + (" azure-identity azure-keyvault-secrets" if secrets else "")
    return ""


@dataclass(frozen=True)
class ImagePlan:
    """The planned parts of an image-runtime job: its code bundle (the user's code plus cloudtune's wheel, and for
    SageMaker entry.py), the wheelhouse, and the start path's arguments."""

    target: ImageTarget
    code: Any  # cloudtune.bundle.Bundle (computed, not written)
    code_path: str
    code_recipe: dict[str, Any]
    wheelhouse: Any  # cloudtune.plan.Upload, staged by submit()
    extras: str
    extra_req: str
    own: bool = False  # cloudtune's own image: its lock is in the image; the start path reinstalls only cloudtune

    @property
    def pip_flags(self) -> str:
        """As the cloud request's: the stock image installs cloudtune from the wheelhouse, the own image (the lock
        already installed when it was built) only replaces cloudtune's wheel, as a job with `image:` does."""
        return "--no-deps --force-reinstall" if self.own else f"--no-index --find-links {self.wheelhouse.source}"


def plan_image(emulate: str, target_name: str, bundle: Any, home: Path, lock_dir: Path | None, train: bool,
               secrets: bool) -> ImagePlan:
    """Pure: name the image env, the wheelhouse and the code bundle an image-runtime job needs (nothing written)."""
    target = image_target(target_name, lock_dir)
    own = TARGETS[target_name].own if target_name in TARGETS else False
    wheels = staging.wheelhouse(target_name, home, str(home / "wheelhouses"), lock_dir)
    wheels = replace(wheels, destination=wheels.source)  # used where submit() stages it
    extras = "[train]" if train and not own else ""
    texts = {}
    if emulate == "aws":
        texts[sm.ENTRY_SCRIPT] = sm.entry_script(f"--no-index --find-links {wheels.source}", extras)
    files = staging.cloudtune_files(True, texts)
    code = staging.compose(bundle, files)
    return ImagePlan(target, code, str(home / "bundles" / f"{code.sha256}.tar.gz"), staging.recipe(bundle, files),
                     wheels, extras, "" if own else extra_requirement(emulate, secrets), own)


def apply_start_path(layout: Any, emulate: str, image: ImagePlan, job_dir: Path) -> dict[str, Any]:
    """Turn a host-runtime layout into the image runtime's: each node's argv becomes the cloud's start path, and
    Azure ML's code snapshot is unpacked by the start path itself. Returns the request's `image` section."""
    placed = {}
    for i, copy in enumerate(layout.copies):
        if copy.source == image.code_path:
            if emulate == "azure":  # the command's own `tar -xzf` unpacks it in the working directory
                layout.copies[i] = type(copy)(copy.source, copy.destination, unpack=False)
            placed[copy.destination] = f"{copy.destination}/{Path(copy.source).name}"
    node_envs = {}
    for node in layout.nodes:
        bundle = next(iter(placed.values()), "")  # Vertex: the one /gcs copy; Azure ML: only its file name is used
        node.argv = start_argv(emulate, node.argv, bundle, image.pip_flags, image.extras, image.extra_req,
                               f"{node.cwd}/tmp/cloudtune")
        node_envs[node.host] = str(job_dir / "image-env" / node.host)
    return {**asdict(image.target), "key": image.target.key, "wheelhouse": image.wheelhouse.source,
            "node_envs": node_envs}


def prepare_image(image: dict[str, Any], log: IO[str]) -> Path:
    """In the supervisor, before the first attempt: the cached image env of the request's `image` section (built
    if missing). Raises CloudtuneError."""
    def say(line: str) -> None:
        log.write(f"[cloudtune] {line}\n")
        log.flush()

    target = ImageTarget(image["name"], image["python"], image["torch"], image["lock_sha256"], image["lock_dir"])
    home = Path(image["wheelhouse"]).parent.parent  # the wheelhouse is <home>/wheelhouses/<target>-<sha16>
    return ensure_image_env(home, target, Path(image["wheelhouse"]), say, log)


def fresh_node_envs(image: dict[str, Any], env: Path) -> dict[str, dict[str, str]]:
    """Before each attempt (a new container on the cloud): one new, empty node env per host over the image env
    `env`. Returns host -> the variables its start path runs with."""
    python = find_python(str(image["python"]))
    return {host: node_env(env, Path(dest), python) for host, dest in image["node_envs"].items()}


def image_container_env(env: dict[str, str], node: dict[str, str]) -> dict[str, str]:
    """A node's container environment on the image: this machine's Python setup (PYTHONPATH, an active virtual
    environment) left out but for the mount emulation's hook, the node env's `bin` first on PATH."""
    out = {k: v for k, v in env.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    out.update(node, PYTHONUNBUFFERED="1")
    if out.get(MOUNTS_VAR):  # the bucket-mount emulation's start-up hook stays (cloudtune.local.mounts)
        out["PYTHONPATH"] = HOOK_DIR
    return out
