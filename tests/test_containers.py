"""The training images' Dockerfiles, parsed (never built: no Docker engine here): base images pinned by exact
tag, torch/transformers pins inside pyproject's `train` extra, a non-root USER, ENTRYPOINT ["cloudtune-run"]."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"gpu": ROOT / "containers/gpu/Dockerfile", "tpu": ROOT / "containers/tpu/Dockerfile"}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: list[Stage]


def _logical_lines(text: str) -> list[str]:
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    if buf:
        lines.append(buf)
    return lines


def _expand(value: str, args: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in args:
            raise AssertionError(f"${name} has no default")
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default.strip().strip('"')
        elif keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(_expand(parts[0], args), name))
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def train_requirements() -> dict[str, str]:
    """name -> specifier string of pyproject's [project.optional-dependencies] train."""
    out = {}
    for req in pyproject()["project"]["optional-dependencies"]["train"]:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", req)
        out[m.group(1).lower()] = m.group(2).strip()
    return out


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.match(r"^(\d+(?:\.\d+)*)", v).group(1).split("."))


def satisfies(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version
    except ImportError:  # a small fallback for the operators pyproject uses
        ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
        for clause in filter(None, (c.strip() for c in specifier.split(","))):
            op = next(o for o in (">=", "<=", "==", "!=", ">", "<") if clause.startswith(o))
            a, b = _version_tuple(version), _version_tuple(clause[len(op):].strip())
            n = max(len(a), len(b))
            if not ops[op](a + (0,) * (n - len(a)), b + (0,) * (n - len(b))):
                return False
        return True
    return Version(version) in SpecifierSet(specifier)


def test_version_compare_helpers() -> None:
    assert satisfies("2.9.1", ">=2.2") and not satisfies("2.1.0", ">=2.2") and satisfies("5.24.0", ">=4.44,<6")
    assert _version_tuple("2.9.1+cu128") == (2, 9, 1)


# ------------------------------------------------------------------------------------------------


@pytest.fixture(params=sorted(DOCKERFILES), ids=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(DOCKERFILES[request.param])


def test_multi_stage_builds_the_wheel_then_installs_train_extra(dockerfile) -> None:
    kind, df = dockerfile
    assert len(df.stages) >= 2, f"{kind}: expected a builder stage and a runtime stage"
    builder, runtime = df.stages[0], df.stages[-1]
    assert builder.name == "builder"
    builder_runs = " ".join(rest for kw, rest in builder.instructions if kw == "RUN")
    # the GPU image installs the wheel a job carries (cloudtune.kit.wheel), the TPU image a `pip wheel --no-deps` one
    assert ("pip wheel" in builder_runs and "--no-deps" in builder_runs) or "cloudtune_wheel(" in builder_runs
    copies = [rest for kw, rest in builder.instructions if kw == "COPY"]
    assert any("pyproject.toml" in c for c in copies) and any(c.split()[0] == "cloudtune" for c in copies)
    assert any(kw == "COPY" and rest.startswith("--from=builder") for kw, rest in runtime.instructions)
    runs = " ".join(rest for kw, rest in runtime.instructions if kw == "RUN")
    assert re.search(r"cloudtune-\*\.whl\)?\[train[\],]", runs), f"{kind}: the runtime stage must install cloudtune[train]"
    if kind == "gpu":  # QLoRA (lora.quantize: 4bit) needs bitsandbytes, which only CUDA images can use
        assert re.search(r"cloudtune-\*\.whl\)?\[train,qlora[\],]", runs), "the GPU image must install cloudtune[train,qlora]"


def test_base_images_pinned_by_exact_tag(dockerfile) -> None:
    kind, df = dockerfile
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        if stage.image in stage_names:
            continue
        repo, sep, tag = stage.image.rpartition(":")
        assert sep and "/" not in tag, f"{kind}: base image {stage.image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+(\.\d+)?", tag), f"{kind}: {stage.image!r} is not pinned to a version"


def pins(df: Dockerfile) -> dict[str, str]:
    """Package pins declared by the Dockerfile, from its ARG defaults (TORCH_VERSION, ...) and `pkg==X` literals."""
    found = {re.sub(r"_VERSION$", "", k).lower().replace("_", "-"): v for k, v in df.args.items() if k.endswith("_VERSION")}
    for stage in df.stages:
        for kw, rest in stage.instructions:
            if kw == "RUN":
                for name, version in re.findall(r"([A-Za-z][\w.-]*)(?:\[\w+\])?==([\w.${}]+)", rest):
                    found.setdefault(name.lower().replace("_", "-"), _expand(version, df.args))
    return found


def test_torch_and_transformers_pins_agree_with_pyproject(dockerfile) -> None:
    kind, df = dockerfile
    declared = pins(df)
    ranges = train_requirements()
    for package in ("torch", "transformers"):
        assert package in declared, f"{kind}: no {package} pin"
        assert satisfies(declared[package], ranges[package]), \
            f"{kind}: {package}=={declared[package]} is outside pyproject's train range {package}{ranges[package]}"
    runs = " ".join(rest for s in df.stages for kw, rest in s.instructions if kw == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs and '"transformers==${TRANSFORMERS_VERSION}"' in runs
    if kind == "gpu":  # the pinned torch is the base image's own: the tag starts with it
        tag = df.stages[-1].image.rpartition(":")[2]
        assert tag.startswith(declared["torch"] + "-"), f"base tag {tag} does not carry torch {declared['torch']}"
        assert "cuda" in tag
    if kind == "tpu":
        assert _version_tuple(declared["torch-xla"])[:2] == _version_tuple(declared["torch"])[:2], "torch_xla must match torch"
        assert any(kw == "ENV" and "PJRT_DEVICE=TPU" in rest for kw, rest in df.stages[-1].instructions)


def test_non_root_user_then_entrypoint(dockerfile) -> None:
    kind, df = dockerfile
    runtime = df.stages[-1]
    keywords = [kw for kw, _ in runtime.instructions]
    assert "ENTRYPOINT" in keywords and "USER" in keywords
    entry_at = max(i for i, kw in enumerate(keywords) if kw == "ENTRYPOINT")
    users = [rest for kw, rest in runtime.instructions[:entry_at] if kw == "USER"]
    assert users, f"{kind}: no USER before the ENTRYPOINT"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{kind}: the image runs as root"
    assert not any(kw == "USER" for kw, _ in runtime.instructions[entry_at:]), "USER after ENTRYPOINT"
    entry = runtime.instructions[entry_at][1]
    assert json.loads(entry) == ["cloudtune-run"], f"{kind}: ENTRYPOINT must be exactly [\"cloudtune-run\"], got {entry}"


def test_cloudtune_run_is_a_console_script() -> None:
    import importlib

    target = pyproject()["project"]["scripts"]["cloudtune-run"]
    module, _, func = target.partition(":")
    assert (module, func) == ("cloudtune.entrypoint", "main")
    assert callable(getattr(importlib.import_module(module), func))


def test_parser_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch==2.1.0 \\\n   transformers==4.0.0\nENTRYPOINT cloudtune-run\n")
    df = parse(bad)
    assert df.stages[0].image == "python:latest"
    assert pins(df) == {"torch": "2.1.0", "transformers": "4.0.0"}
    assert not satisfies(pins(df)["torch"], train_requirements()["torch"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(df.stages[0].instructions[-1][1])


def test_gpu_image_installs_its_lock() -> None:
    """The GPU image is target cloudtune-gpu-py311: its base image carries the target's torch, its builder stages
    that lock's wheels and the runtime installs only them (--no-index), transformers pinned to the lock's."""
    from cloudtune.kit.bootstrap import TARGETS, load_lock

    df = parse(DOCKERFILES["gpu"])
    target = TARGETS[df.args["LOCK"]]
    assert target.own and df.args["TORCH_VERSION"] == target.torch
    locked = {w.name.lower(): w.version for w in load_lock(target.name).wheels}
    assert df.args["TRANSFORMERS_VERSION"] == locked["transformers"]
    assert "bitsandbytes" in locked and "google-cloud-secret-manager" in locked
    builder_runs = " ".join(rest for kw, rest in df.stages[0].instructions if kw == "RUN")
    assert "stage_wheelhouse(load_lock(" in builder_runs and '"${LOCK}"' in builder_runs
    runtime_runs = " ".join(rest for kw, rest in df.stages[-1].instructions if kw == "RUN")
    assert "--no-index --find-links /wheels" in runtime_runs
