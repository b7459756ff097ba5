"""`providers.local.runtime: image`: a local job on the emulated image's Python and wheel lock, started through the
cloud's own start path (cloudtune.local.imageenv).

Fast lane (always on): the start path is the cloud request's own text, the build commands are exact, and a
`command:` job runs end to end under each emulated cloud in an image env built from a tiny lock. The tiny lock's
wheels are this machine's installed cloudtune dependencies (pydantic, PyYAML, click, ...) packed back into wheels
and served on 127.0.0.1, so pip really installs them with --no-index; azureml-mlflow (which Azure ML's start path
installs) is a stand-in wheel. No torch, no download.

Full lanes (CLOUDTUNE_IMAGE_LANES=1, offline on an image env that benchmarks/image_lanes.py built in
$CLOUDTUNE_HOME): the stock targets' Python, torch and lock run the tiny causal-LM and classification recipes; see
the README's local section for their cost.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import distribution
from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.contracts import azureml as az, sagemaker as sm, vertex as vx
from cloudtune.local.imageenv import MARKER, build_steps, find_python, image_target
from cloudtune.local.mounts import HOOK_DIR

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
DEPS = ("pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection", "PyYAML", "click")
TARGETS = {"aws": "sagemaker-pytorch-py312", "gcp": "vertex-pytorch-py310", "azure": "azureml-acpt-py310"}
OWN_GPU = "cloudtune-gpu-py311"  # the image Vertex AI `train:` jobs run (cloudtune.kit.bootstrap.RECIPE_TARGETS)

JOB = """\
import json, os, pathlib, sys
import cloudtune
out = pathlib.Path(os.environ["CLOUDTUNE_MODEL_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "seen.json").write_text(json.dumps({"prefix": sys.prefix, "cloudtune": cloudtune.__file__,
                                           "path": os.environ["PATH"], "pythonpath": os.environ.get("PYTHONPATH")}))
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(name: str, out: Path) -> Path:
    """A wheel of the installed distribution `name` (its files as installed, its own WHEEL tags)."""
    dist = distribution(name)
    base = Path(str(dist.locate_file("")))
    entries: list[tuple[str, bytes]] = []
    for f in dist.files or []:
        rel = str(f)
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith((".pyc", "/RECORD", "/INSTALLER",
                                                                          "/REQUESTED", "/direct_url.json")):
            continue
        entries.append((rel, (base / rel).read_bytes()))
    info = next(rel for rel, _ in entries if rel.endswith(".dist-info/WHEEL")).rsplit("/", 1)[0]
    tag = next(line.split(":", 1)[1].strip() for line in (base / info / "WHEEL").read_text().splitlines()
               if line.startswith("Tag:"))
    record = "".join(f"{rel},{_record_hash(data)},{len(data)}\n" for rel, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    path = out / f"{info.removesuffix('.dist-info')}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in entries:
            zf.writestr(rel, data)
    path.write_bytes(buf.getvalue())
    return path


def stand_in(name: str, version: str, out: Path) -> Path:
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = ("".join(f"{k},{_record_hash(v)},{len(v)}\n" for k, v in files.items())
                               + f"{info}/RECORD,,\n").encode()
    path = out / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


@pytest.fixture(scope="module")
def tiny_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Locks for the three stock targets on this machine's Python, no torch, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("image-locks")
    served, locks = root / "served", root / "locks"
    served.mkdir()
    locks.mkdir()
    files = [repack(name, served) for name in DEPS] + [stand_in("azureml-mlflow", "1.0", served)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    wheels = [{"name": f.name.split("-")[0], "version": f.name.split("-")[1], "filename": f.name,
               "url": f"{url}/{f.name}", "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
               "size": f.stat().st_size} for f in files]
    for target in [*TARGETS.values(), OWN_GPU]:
        (locks / f"{target}.json").write_text(json.dumps({"target": target, "python": HERE, "image_torch": None,
                                                          "wheels": wheels}))
    try:
        yield locks
    finally:
        server.shutdown()
        server.server_close()


def _spec(tmp: Path, emulate: str, locks: Path, requirements: str | None = None) -> Path:
    code = tmp / "code"
    code.mkdir(exist_ok=True)
    (code / "job.py").write_text(JOB)
    if requirements is not None:
        (code / "requirements.txt").write_text(requirements)
    spec = tmp / "job.yaml"
    spec.write_text(f"name: img-{emulate}\ncommand: python job.py\ncode: code\nresources: {{max_runtime: 600}}\n"
                    f"providers:\n  local: {{emulate: {emulate}, runtime: image, wheel_locks: {locks}}}\n")
    return spec


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_a_job_runs_on_the_image_env_through_the_start_path(emulate: str, tiny_locks: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    spec = _spec(tmp_path, emulate, tiny_locks, "click\n" if emulate == "aws" else None)
    job = api.launch(spec)
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    seen = json.loads((Path(job.model_uri) / "seen.json").read_text())
    node_env = Path(seen["prefix"])
    assert node_env.parent.name == "image-env" and node_env.is_relative_to(home / "jobs")  # the node's own env
    assert Path(seen["cloudtune"]).is_relative_to(node_env)  # installed there by the start path, not this checkout
    # none of this machine's Python setup; under gcp and azure only the bucket-mount emulation's start-up hook
    assert seen["pythonpath"] == (HOOK_DIR if emulate in ("gcp", "azure") else None)
    target = image_target(TARGETS[emulate], tiny_locks)
    image = home / "image-envs" / target.key
    assert json.loads((image / MARKER).read_text())["lock_sha256"] == target.lock_sha256
    assert not list(image.glob("lib/python*/site-packages/cloudtune*"))  # the cached image is never written
    log = "\n".join(job.logs())
    if emulate == "aws":
        assert "Requirement already satisfied: click" in log  # the toolkit's requirements.txt step ran

    # a second job reuses the cached image env
    built = (image / MARKER).stat().st_mtime_ns
    again = api.launch(spec)
    assert again.wait(timeout=300) == "succeeded", "\n".join(again.logs())
    assert (image / MARKER).stat().st_mtime_ns == built
    assert "building the" not in "\n".join(again.logs())


def test_a_lock_that_cannot_install_on_its_python_fails_the_job_with_the_missing_wheel(
        tiny_locks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As pip --no-index on the image would: a lock missing a dependency (here typing-inspection, which pydantic
    needs) fails the job before any node starts, naming the requirement; the next build starts over."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    locks = tmp_path / "locks"
    locks.mkdir()
    data = json.loads((tiny_locks / f"{TARGETS['gcp']}.json").read_text())
    data["wheels"] = [w for w in data["wheels"] if w["name"] != "typing_inspection"]
    (locks / f"{TARGETS['gcp']}.json").write_text(json.dumps(data))
    job = api.launch(_spec(tmp_path, "gcp", locks))
    assert job.wait(timeout=300) == "failed"
    reason = json.loads((Path(job.ref().native_id) / "state.json").read_text())["failure_reason"]
    assert reason.startswith("ImageEnvError: ") and "typing-inspection" in reason.replace("_", "-"), reason
    target = image_target(TARGETS["gcp"], locks)
    assert not (tmp_path / "home" / "image-envs" / target.key / MARKER).exists()


def test_the_start_path_is_the_cloud_requests_own(tiny_locks: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each node's command is the text the cloud request carries (cloudtune.contracts), with local paths."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    from cloudtune_azure.request import BOOTSTRAP as AZ_BOOT
    from cloudtune_gcp.request import BOOTSTRAP as GCP_BOOT

    assert GCP_BOOT == vx.BOOTSTRAP and AZ_BOOT == az.BOOTSTRAP
    plans = {}
    for e in TARGETS:
        (tmp_path / e).mkdir()
        plans[e] = api.launch(_spec(tmp_path / e, e, tiny_locks), dry_run=True)
    gcp = plans["gcp"].request["nodes"][0]
    assert gcp["argv"][:4] == ["/bin/sh", "-c", vx.bootstrap(f"{gcp['cwd']}/tmp/cloudtune"), "cloudtune-bootstrap"]
    assert gcp["argv"][5].startswith("--no-index --find-links ") and gcp["argv"][5].split()[-1] == plans["gcp"].request["image"]["wheelhouse"]
    azure = plans["azure"].request["nodes"][0]
    assert azure["argv"][:4] == ["sh", "-c", az.BOOTSTRAP, "cloudtune-bootstrap"]
    assert all(not c["unpack"] for c in plans["azure"].request["copies"])  # the command's own tar unpacks it
    aws = plans["aws"].request["nodes"][0]
    assert aws["argv"] == ["/bin/sh", "-c", sm.SCRIPT_MODE, "sagemaker-training-toolkit", sm.ENTRY_SCRIPT]
    assert any("runtime image: Python" in n for n in plans["aws"].notes)


def test_build_commands_install_torch_and_the_lock_without_an_index(tmp_path: Path) -> None:
    target = image_target("sagemaker-pytorch-py312")
    assert (target.python, target.torch) == ("3.12", "2.8.0")
    steps = build_steps(Path("/py/python3.12"), tmp_path / "env", target, tmp_path / "wh", ["a==1"], tmp_path / "t",
                        download=True)
    py = str(tmp_path / "env" / "bin" / "python")
    assert steps[0] == ["/py/python3.12", "-m", "venv", str(tmp_path / "env")]
    assert steps[1] == [py, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(tmp_path / "t"), "torch==2.8.0"]
    assert steps[2] == [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(tmp_path / "t"), "torch==2.8.0"]
    assert steps[3][-4:] == ["--no-index", "--find-links", str(tmp_path / "wh"), "a==1"]
    assert len(build_steps(Path("/p"), tmp_path / "env", target, tmp_path / "wh", [], tmp_path / "t", False)) == 3


def test_a_missing_python_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cloudtune.errors import InvalidInput

    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InvalidInput, match="no Python 3.9 on this machine") as err:
        find_python("3.9")
    assert "pyenv install 3.9" in str(err.value)


def test_a_vertex_train_job_emulates_cloudtunes_own_image_as_the_request_runs_it(
        tiny_locks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Vertex AI `train:` job runs cloudtune's GPU image (its lock installed when the image is built): the request
    and the image runtime agree on the target and on the start path's pip arguments (only cloudtune's wheel is
    reinstalled, no wheelhouse, no extras)."""
    import yaml

    import cloudtune
    from tests.tiny_models import make_tiny_gpt2

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    model = make_tiny_gpt2(tmp_path / "tiny-gpt2")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(8)))
    job = {"name": "own-image", "inputs": {"train": "train.jsonl"}, "train": {"model": str(model)},
           "resources": {"accelerator": "cpu", "max_runtime": 600},
           "providers": {"local": {"emulate": "gcp", "runtime": "image", "wheel_locks": str(tiny_locks)}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    local = api.launch(tmp_path / "job.yaml", dry_run=True)
    assert local.request["image"]["name"] == OWN_GPU
    argv = local.request["nodes"][0]["argv"]
    job.update(inputs={"train": "gs://data/train.jsonl"}, train={"model": "gpt2"},
               resources={"accelerator": "L4", "max_runtime": 600},
               providers={"gcp": {"project": "p", "region": "us-central1", "bucket": "my-bucket"}})
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump(job))
    vertex = api.launch(tmp_path / "cloud.yaml", provider="gcp", dry_run=True)
    pool = vertex.request["customJob"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert pool["imageUri"] == f"us-central1-docker.pkg.dev/p/cloudtune/cloudtune-gpu:{cloudtune.__version__}"
    assert argv[5:8] == pool["args"][1:4] == ["--no-deps --force-reinstall", "", ""]



LANES = os.environ.get("CLOUDTUNE_IMAGE_LANES") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not LANES, reason="downloads the image's torch (GBs): set CLOUDTUNE_IMAGE_LANES=1")
@pytest.mark.parametrize("task", ["causal-lm", "seq-classification"])
@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_full_lane(emulate: str, task: str, tmp_path: Path) -> None:
    """The stock target's Python, torch and lock run a tiny recipe, offline, on the image env cached in
    CLOUDTUNE_HOME (not reset here): `CLOUDTUNE_HOME=DIR python benchmarks/image_lanes.py aws` builds it (it
    downloads). CLOUDTUNE_IMAGE_LANE_TARGETS (e.g. `aws`) picks the lanes to run."""
    from cloudtune.local.imageenv import env_path
    from cloudtune.kit.versions import target_software
    from cloudtune.settings import cloudtune_home

    if emulate not in os.environ.get("CLOUDTUNE_IMAGE_LANE_TARGETS", "aws,gcp,azure").split(","):
        pytest.skip(f"lane {emulate} not selected by CLOUDTUNE_IMAGE_LANE_TARGETS")
    if not (env_path(cloudtune_home(), image_target(target_software(emulate, train=True).target)) / MARKER).is_file():
        pytest.skip(f"no cached image env for {emulate} in $CLOUDTUNE_HOME: run benchmarks/image_lanes.py {emulate}")
    import yaml

    from tests.tiny_models import make_tiny_gpt2

    model = make_tiny_gpt2(tmp_path / "tiny-gpt2")
    labels = ["shipping", "equipment"]
    rows = [{"text": f"the grinder broke {i}", "label": labels[i % 2]} if task == "seq-classification"
            else {"text": f"hello world number {i}"} for i in range(32)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": f"lane-{emulate}", "inputs": {"train": "train.jsonl"},
            "train": {"model": str(model), "task": task,
                      "hyperparameters": {"epochs": 1, "max_steps": 4, "batch_size": 4, "max_seq_len": 32}},
            "resources": {"accelerator": "cpu", "max_runtime": 3600},
            "providers": {"local": {"emulate": emulate, "runtime": "image"}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=3600) == "succeeded", "\n".join(job.logs())
