"""Every shipped wheel lock runs on its stock image: the image's Python and torch meet every floor the lock's wheels
recorded (Requires-Python, Requires-Dist on torch, and the runtime floors pip cannot see, such as transformers'
`is_torch_available`). Offline and in seconds: the floors were read by lockgen when it resolved the lock."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from cloudtune.kit.bootstrap import LOCK_DIR, PROVIDER_TARGETS, TARGETS, load_lock
from cloudtune.kit.lockgen import refuse_broken, runtime_floor
from cloudtune.kit.versions import check_lock, marker_environment, target_software, versions_note

pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TF_FLOOR = "transformers/utils/import_utils.py is_torch_available()"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_shipped_lock_runs_on_its_image(target: str) -> None:
    lock = load_lock(target)
    assert lock.floors_recorded, f"{target}: run `python -m cloudtune.kit.lockgen --floors {target}`"
    assert check_lock(TARGETS[target], lock) == []


@pytest.mark.parametrize("target", sorted(t for t in TARGETS if "train" in TARGETS[t].root_extras))
def test_shipped_lock_records_the_floors_pip_cannot_see(target: str) -> None:
    """transformers declares no torch requirement; its runtime floor is in the lock, with its source."""
    lock = load_lock(target)
    (tf,) = [w for w in lock.wheels if w.name.lower() == "transformers"]
    runtime = [f for f in tf.floors if f.on == "torch" and TF_FLOOR in f.source]
    assert len(runtime) == 1 and runtime[0].spec.startswith(">=")
    assert tf.filename in runtime[0].source
    assert all(f.on in ("python", "torch") for w in lock.wheels for f in w.floors)
    data = json.loads((LOCK_DIR / f"{target}.json").read_text())
    assert data["image_torch"] == TARGETS[target].torch and data["python"] == TARGETS[target].python
    assert data["pins"] == list(TARGETS[target].pins)


def test_every_provider_has_a_target_with_a_lock_and_the_launchers_agree() -> None:
    import cloudtune_aws.images as aws
    import cloudtune_azure.images as azure
    import cloudtune_gcp.images as gcp

    assert {"aws": aws.LOCK_TARGET, "gcp": gcp.LOCK_TARGET, "azure": azure.LOCK_TARGET} == PROVIDER_TARGETS
    for provider, target in PROVIDER_TARGETS.items():
        sw = target_software(provider)
        assert (sw.target, sw.python, sw.torch) == (target, TARGETS[target].python, TARGETS[target].torch)
        assert sw.lock == LOCK_DIR / f"{target}.json" and sw.lock.is_file()
    assert aws.image_table(use_sdk=False).framework_version == TARGETS[PROVIDER_TARGETS["aws"]].torch
    assert azure.FRAMEWORK_VERSION == TARGETS[PROVIDER_TARGETS["azure"]].torch.rsplit(".", 1)[0]
    assert gcp.FRAMEWORK_VERSION == TARGETS[PROVIDER_TARGETS["gcp"]].torch.rsplit(".", 1)[0]
    assert f"py{TARGETS[PROVIDER_TARGETS['gcp']].python.replace('.', '')}" == gcp.PY_VERSION


def _wheel(name: str, version: str, floors: list[dict] | None = None, requires: list[str] | None = None) -> dict:
    filename = f"{name}-{version}-py3-none-any.whl"
    return {"name": name, "version": version, "filename": filename,
            "url": f"https://files.pythonhosted.org/x/{filename}", "sha256": "0" * 64, "size": 1,
            "floors": floors or [], "requires": requires or []}


def _write_lock(tmp: Path, target: str, wheels: list[dict], roots: list[str] | None, **more: object) -> Path:
    """A lock file of `target` in `tmp` as lockgen writes it (resolved by the target's Python unless `more` says)."""
    data: dict = {"target": target, "wheels": wheels, "floors_recorded": True}
    if roots is not None:
        data.update(roots=roots, root_extras=["train"], resolved_with=marker_environment(TARGETS[target]))
    data.update(more)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{target}.json").write_text(json.dumps(data))
    return tmp


def _broken_lock(tmp: Path, target: str, floors: list[dict], floors_recorded: bool = True) -> Path:
    return _write_lock(tmp, target, [_wheel("transformers", "5.20.2", floors)], ["transformers"],
                       floors_recorded=floors_recorded)


def test_a_lock_that_breaks_a_runtime_torch_floor_is_refused(tmp_path: Path) -> None:
    """The issue's case: transformers 5.20 on Vertex's torch 2.4 (switches PyTorch off at model load)."""
    floor = {"on": "torch", "spec": ">=2.6.0", "source": f"transformers-5.20.2-py3-none-any.whl: {TF_FLOOR}"}
    target = TARGETS["vertex-pytorch-py310"]
    lock = load_lock(target.name, _broken_lock(tmp_path, target.name, [floor]))
    (problem,) = check_lock(target, lock)
    assert "transformers 5.20.2 needs torch >=2.6.0" in problem and TF_FLOOR in problem
    assert "has torch 2.4.0" in problem and "To fix:" in problem
    with pytest.raises(SystemExit, match="refused: the vertex-pytorch-py310 lock would not run on its image"):
        refuse_broken(target, json.loads((tmp_path / f"{target.name}.json").read_text()))


def test_a_wheel_whose_python_floor_the_image_lacks_is_refused(tmp_path: Path) -> None:
    floor = {"on": "python", "spec": ">=3.11.0", "source": "METADATA Requires-Python"}
    target = TARGETS["azureml-acpt-py310"]
    (problem,) = check_lock(target, load_lock(target.name, _broken_lock(tmp_path, target.name, [floor])))
    assert "needs python >=3.11.0" in problem and "has python 3.10" in problem


def test_a_lock_without_recorded_floors_is_refused(tmp_path: Path) -> None:
    target = TARGETS["sagemaker-pytorch-py312"]
    (problem,) = check_lock(target, load_lock(target.name, _broken_lock(tmp_path, target.name, [], False)))
    assert "no floors recorded" in problem and "lockgen --floors sagemaker-pytorch-py312" in problem


# Requires-Dist lines as anyio and huggingface_hub declare them (METADATA): what the Python 3.10 locks lacked
ANYIO = ['exceptiongroup>=1.0.2; python_version < "3.11"', "idna>=2.8",
         'typing_extensions>=4.5; python_version < "3.13"', 'trio>=0.32.0; extra == "trio"']
HUB = ["filelock", 'tomli; python_version < "3.11"', "httpx<1,>=0.23.0"]


def _anyio_lock(tmp: Path, target: str, extra: tuple[dict, ...] = ()) -> Path:
    wheels = [_wheel("anyio", "4.12.0", requires=ANYIO), _wheel("idna", "3.11"),
              _wheel("typing_extensions", "4.15.0"), *extra]
    return _write_lock(tmp, target, wheels, ['anyio>=4; extra == "train"', 'pytest; extra == "dev"'])


def test_a_lock_missing_a_dependency_of_the_targets_python_is_refused(tmp_path: Path) -> None:
    """The issue's case: resolved by Python 3.11, the Python 3.10 locks lacked exceptiongroup (anyio needs it below
    3.11). The same wheels are complete for Python 3.12, and complete for 3.10 once exceptiongroup is locked."""
    vertex, sagemaker = TARGETS["vertex-pytorch-py310"], TARGETS["sagemaker-pytorch-py312"]
    (problem,) = check_lock(vertex, load_lock(vertex.name, _anyio_lock(tmp_path / "a", vertex.name)))
    assert problem.startswith('anyio 4.12.0 requires `exceptiongroup>=1.0.2; python_version < "3.11"`, which applies '
                              "on Python 3.10, but exceptiongroup is not in the lock.")
    assert "To fix: `python -m cloudtune.kit.lockgen vertex-pytorch-py310`" in problem
    with pytest.raises(SystemExit, match="exceptiongroup is not in the lock"):
        refuse_broken(vertex, json.loads((tmp_path / "a" / f"{vertex.name}.json").read_text()))
    assert check_lock(sagemaker, load_lock(sagemaker.name, _anyio_lock(tmp_path / "b", sagemaker.name))) == []
    fixed = _anyio_lock(tmp_path / "c", vertex.name, (_wheel("exceptiongroup", "1.3.0"),))
    assert check_lock(vertex, load_lock(vertex.name, fixed)) == []


def test_requirements_follow_extras_and_versions(tmp_path: Path) -> None:
    """An extra requested on the way (anyio[trio]) brings its lines in; a locked version outside a specifier is a
    problem too; the image's torch is never looked for in the lock."""
    target = TARGETS["sagemaker-pytorch-py312"]
    wheels = [_wheel("anyio", "4.12.0", requires=ANYIO), _wheel("idna", "2.5"), _wheel("typing_extensions", "4.15.0"),
              _wheel("peft", "0.18.0", requires=["torch>=1.13.0", "anyio[trio]"])]
    lock = load_lock(target.name, _write_lock(tmp_path, target.name, wheels, ["peft"]))
    assert check_lock(target, lock) == [
        "anyio 4.12.0 requires `idna>=2.8`, which applies on Python 3.12, but idna is locked at 2.5. To fix: `python "
        "-m cloudtune.kit.lockgen sagemaker-pytorch-py312` (it resolves with a Python 3.12)",
        "anyio 4.12.0 requires `trio>=0.32.0; extra == \"trio\"`, which applies on Python 3.12, but trio is not in the "
        "lock. To fix: `python -m cloudtune.kit.lockgen sagemaker-pytorch-py312` (it resolves with a Python 3.12)"]


def test_every_locked_wheel_is_checked_not_only_those_the_roots_reach(tmp_path: Path) -> None:
    """The image runtime installs every locked wheel: one the roots never reach is checked too."""
    target = TARGETS["vertex-pytorch-py310"]
    wheels = [_wheel("idna", "3.11"), _wheel("anyio", "4.12.0", requires=ANYIO), _wheel("typing_extensions", "4.15.0")]
    (problem,) = check_lock(target, load_lock(target.name, _write_lock(tmp_path, target.name, wheels, ["idna"])))
    assert problem.startswith("anyio 4.12.0 requires `exceptiongroup>=1.0.2")


def test_a_lock_resolved_by_another_python_or_without_requirements_is_refused(tmp_path: Path) -> None:
    target = TARGETS["azureml-acpt-py310"]
    wheels = [_wheel("huggingface_hub", "1.33.0", requires=HUB), _wheel("filelock", "3.20.0"),
              _wheel("httpx", "0.28.1"), _wheel("tomli", "2.3.0")]
    ok = load_lock(target.name, _write_lock(tmp_path / "a", target.name, wheels, ["huggingface_hub"]))
    assert check_lock(target, ok) == []
    wrong = _write_lock(tmp_path / "b", target.name, wheels, ["huggingface_hub"],
                        resolved_with={**marker_environment(target), "python_version": "3.11",
                                       "sys_platform": "darwin"})
    assert [p.split(":")[0] for p in check_lock(target, load_lock(target.name, wrong))] == [
        "lock azureml-acpt-py310 was resolved with python_version 3.11, not the image's 3.10",
        "lock azureml-acpt-py310 was resolved with sys_platform darwin, not the image's linux"]
    old = load_lock(target.name, _write_lock(tmp_path / "c", target.name, wheels, None))
    (problem,) = check_lock(target, old)
    assert "no requirements recorded" in problem and "lockgen azureml-acpt-py310" in problem


def test_the_target_marker_environment() -> None:
    env = marker_environment(TARGETS["vertex-pytorch-py310"])
    assert (env["python_version"], env["python_full_version"], env["sys_platform"], env["platform_machine"],
            env["implementation_name"]) == ("3.10", "3.10.0", "linux", "x86_64", "cpython")


def test_lockgen_refuses_without_the_targets_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Python 3.10 here: one clear error naming it, before any resolving, and no lock written."""
    from cloudtune.kit import lockgen

    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    before = (LOCK_DIR / "vertex-pytorch-py310.json").read_bytes()
    with pytest.raises(SystemExit) as err:
        lockgen.main(["vertex-pytorch-py310"])
    assert str(err.value).startswith("lockgen vertex-pytorch-py310: no Python 3.10 on this machine: the "
                                     "vertex-pytorch-py310 lock must be resolved by the image's Python 3.10")
    assert "To fix: install it (e.g. `pyenv install 3.10`)" in str(err.value)
    assert (LOCK_DIR / "vertex-pytorch-py310.json").read_bytes() == before


def _wheel_with(tmp: Path, source: str) -> Path:
    path = tmp / "transformers-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("transformers/utils/import_utils.py", source)
    return path


def test_runtime_floor_is_read_from_the_wheel(tmp_path: Path) -> None:
    source = ('def other():\n    return version.parse("9.0.0")\n\n'
              'def is_torch_available() -> bool:\n    try:\n'
              '        is_available, torch_version = _is_package_available("torch", return_version=True)\n'
              '        return is_available and version.parse(torch_version) >= version.parse("2.7.0")\n'
              '    except packaging.version.InvalidVersion:\n        return False\n\ndef later():\n    pass\n')
    floor = runtime_floor("transformers", _wheel_with(tmp_path, source))
    assert floor == {"on": "torch", "spec": ">=2.7.0",
                     "source": f"transformers-9.9.9-py3-none-any.whl: {TF_FLOOR}"}
    (tmp_path / "b").mkdir()
    with pytest.raises(SystemExit, match="no torch floor found"):
        runtime_floor("transformers", _wheel_with(tmp_path / "b", "def is_torch_available():\n    return True\n"))


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_floors_agree_with_the_images_and_locks() -> None:
    """The `train` extra's torch floor is the oldest torch a `train:` target runs, its transformers floor the oldest
    transformers a lock holds, requires-python the oldest Python, and every locked library is in the extra's range."""
    project = _pyproject()["project"]
    train = {Requirement(r).name.lower(): Requirement(r) for r in project["optional-dependencies"]["train"]}
    oldest_torch = min((Version(t.torch) for t in TARGETS.values() if "train" in t.root_extras))
    (floor,) = [s.version for s in train["torch"].specifier if s.operator == ">="]
    assert Version(floor) == oldest_torch
    (py_floor,) = [s.version for s in Requirement(f"python{project['requires-python']}").specifier]
    assert Version(py_floor) == min(Version(t.python) for t in TARGETS.values())
    locked_tf = min(Version(w.version) for t in TARGETS for w in load_lock(t).wheels if w.name == "transformers")
    (tf_floor,) = [s.version for s in train["transformers"].specifier if s.operator == ">="]
    assert Version(tf_floor).release == locked_tf.release[:2]  # the oldest transformers a stock job runs
    for target in TARGETS:
        for wheel in load_lock(target).wheels:
            req = train.get(wheel.name.lower())
            if req is not None:
                assert req.specifier.contains(wheel.version, prereleases=True), (target, wheel.name, wheel.version)


def test_plan_note_names_the_versions() -> None:
    note = versions_note("cloudtune-gpu-py311")
    assert note.startswith("the job runs Python 3.11 and torch 2.9.1 (the image), transformers 5.")
    assert "held back" not in versions_note("sagemaker-pytorch-py312")
    assert versions_note("vertex-pytorch-py310").startswith("the job runs Python 3.10 and torch 2.4.0 (the image)")


def test_local_emulation_warns_for_every_provider_and_for_image(tmp_path: Path) -> None:
    """azure and image: were missing: every emulated cloud compares this machine with its stock target, and a spec
    with `image:` names the versions the local run uses instead."""
    from cloudtune.kit.versions import local_mismatches, local_software
    from cloudtune.local.launcher import LocalLauncher
    from cloudtune.spec import LocalSettings, validate_spec
    from tests.test_golden_local import SCENARIOS, SUFFIX, project

    tmp = project(tmp_path / "p")
    for provider, target in PROVIDER_TARGETS.items():
        spec = validate_spec(SCENARIOS["quickstart-aws"][0], base_dir=tmp)
        plan = LocalLauncher(home=tmp_path / "home").plan(spec, LocalSettings(emulate=provider), suffix=SUFFIX)
        warning = [n for n in plan.notes if n.startswith(f"warning: this machine differs from the {provider} stock")]
        assert len(warning) == (1 if local_mismatches(target) else 0)
    spec = validate_spec({**SCENARIOS["quickstart-aws"][0], "image": "example.com/me/train:1"}, base_dir=tmp)
    plan = LocalLauncher(home=tmp_path / "home").plan(spec, LocalSettings(emulate="azure"), suffix=SUFFIX)
    (note,) = [n for n in plan.notes if n.startswith("warning: image example.com/me/train:1 is not used locally")]
    for name, have in local_software().items():
        assert f"{name} {have}" in note


def test_checkpointing_keyword_follows_the_locked_transformers() -> None:
    """The Python 3.10 locks hold transformers 5.14 and 5.20, whose TrainingArguments know only
    `gradient_checkpointing`; 5.23 onward (this machine) has `activation_checkpointing`."""
    import dataclasses

    from cloudtune.train.arguments import checkpointing_arguments

    @dataclasses.dataclass
    class Before523:  # the checkpointing fields of transformers 5.14-5.22's TrainingArguments
        gradient_checkpointing: bool = False
        gradient_checkpointing_kwargs: dict | None = None

    assert checkpointing_arguments(Before523, True) == {"gradient_checkpointing": True,
                                                        "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    Before523(**checkpointing_arguments(Before523, False))
    transformers = pytest.importorskip("transformers")
    if Version(transformers.__version__) >= Version("5.23"):
        assert checkpointing_arguments(transformers.TrainingArguments, False) == {
            "activation_checkpointing": False, "activation_checkpointing_kwargs": None}


def test_metadata_floors_include_the_torch_extra_pip_never_sees() -> None:
    """diffusers declares torch only under its `torch` extra, which a job never installs: the lock records it."""
    from cloudtune.kit.lockgen import metadata_floors

    lines = ['torchsde; extra == "test"', 'torch>=2.6; extra == "torch"', 'torch>=2.6; extra == "dev"']
    assert metadata_floors("diffusers", ">=3.11.0", lines) == [
        {"on": "python", "spec": ">=3.11.0", "source": "METADATA Requires-Python"},
        {"on": "torch", "spec": ">=2.6", "source": 'METADATA Requires-Dist: torch>=2.6; extra == "torch"'}]
    assert metadata_floors("peft", None, ['torch>=2.6; extra == "torch"', "torch>=1.13.0"]) == [
        {"on": "torch", "spec": ">=1.13.0", "source": "METADATA Requires-Dist: torch>=1.13.0"}]


@pytest.mark.parametrize("dockerfile", ["gpu", "tpu"])
def test_cloudtune_images_meet_transformers_runtime_floor(dockerfile: str) -> None:
    """containers/ pin torch and transformers themselves; the floor of that transformers (recorded in a shipped
    lock holding the same release) is met by the pinned torch."""
    import re

    text = (ROOT / "containers" / dockerfile / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    floors = {f.spec for t in TARGETS for w in load_lock(t).wheels for f in w.floors
              if w.name == "transformers" and w.version == args["TRANSFORMERS_VERSION"] and TF_FLOOR in f.source}
    assert floors, f"no shipped lock holds transformers {args['TRANSFORMERS_VERSION']}: record its floor first"
    from packaging.specifiers import SpecifierSet

    assert all(SpecifierSet(spec).contains(args["TORCH_VERSION"]) for spec in floors)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_shipped_lock_holds_what_cloudtune_requires_today(target: str) -> None:
    """A requirement added to pyproject.toml (the core's, or the `train` extra's for a train target) without
    regenerating the locks fails here, offline, rather than at the job's start on the cloud (`pip install
    --no-index` finds no such wheel): the lock's recorded roots are replaced by today's and checked again."""
    from dataclasses import replace

    from cloudtune.kit.wheel import LAUNCH_SIDE_ONLY  # what the carried wheel leaves out

    project = _pyproject()["project"]
    t = TARGETS[target]
    today = list(project["dependencies"])
    for extra in t.root_extras:
        for line in project["optional-dependencies"][extra]:
            req = Requirement(line)
            marker = f" and ({req.marker})" if req.marker else ""
            today.append(f"{str(req).split(';')[0]}; extra == \"{extra}\"{marker}")
    today = [line for line in today if Requirement(line).name.lower().replace("_", "-") not in LAUNCH_SIDE_ONLY]
    lock = load_lock(target)
    problems = check_lock(t, replace(lock, roots=tuple(today) + t.extra + t.pins))
    assert problems == [], "\n".join(problems)
