"""What a new user trips over (issue 12, kind 8): each as a careful user would expect it."""

from __future__ import annotations

import pytest

import cloudtune
from cloudtune.errors import InvalidInput, SpecError


# ------------------------------------------------------------------------------------------- the Python API
def test_cloudtune_plan_is_the_function_also_after_the_module_is_imported(tmp_path) -> None:
    from cloudtune import api

    assert cloudtune.plan is api.plan
    import importlib

    importlib.import_module("cloudtune.plan")  # the module that defines Plan, bound on the package by the import
    from cloudtune.plan import Plan

    assert cloudtune.plan is api.plan and cloudtune.Plan is Plan
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / "job.yaml").write_text("name: p\nresources: {accelerator: cpu}\ncommand: python main.py\ncode: src\n")
    planned = cloudtune.plan(str(tmp_path / "job.yaml"), provider="local", suffix="t")
    assert isinstance(planned, Plan) and planned.job_name == "p-t"


@pytest.mark.parametrize("kwargs, path, said", [
    ({"name": "x", "command": "echo", "resources": {"acclerator": "L4"}}, "resources.acclerator", "'accelerator'"),
    ({"name": "x", "comand": "echo"}, "comand", "'command'"),
    ({"name": "x", "command": "echo", "retries": "many"}, "retries", "got 'many'"),
    ({"command": "echo"}, "name", "add `name:`"),
    ({"name": "x", "train": {"model": "gpt2", "hyperparameters": {"learning_rat": 1e-4}}},
     "train.hyperparameters.learning_rat", "'learning_rate'"),
])
def test_jobspec_in_code_names_fields_as_the_yaml_does(kwargs: dict, path: str, said: str) -> None:
    with pytest.raises(SpecError) as info:
        cloudtune.JobSpec(**kwargs)
    assert isinstance(info.value, InvalidInput)  # exit 2 in the CLI, a CloudtuneError for scripts
    issue = next(i for i in info.value.issues if i.path == path)
    assert said in issue.message + issue.hint, issue
    assert "pydantic" not in str(info.value) and "errors.pydantic.dev" not in str(info.value)
    from cloudtune.spec import JobSpec

    built = cloudtune.JobSpec(name="x", command="echo")  # a good spec builds as before, and is a JobSpec
    assert built.name == "x" and isinstance(built, JobSpec)


# ------------------------------------------------------------------------------------------- status figures
def _record(**extra):
    from cloudtune.store import JobRecord

    return JobRecord(job_id="j", provider="aws", name="j", state="succeeded", created_at=1000.0, updated_at=2000.0,
                     extra={"started_at": 1000.0, "ended_at": 1900.0, **extra})


LOG = """[cloudtune] step=36/38 loss=1.2000 learning_rate=1e-05 epoch=7.50 tokens_per_second=3256.0 eta_s=4 eta=4s
[cloudtune] train done: train_loss=1.3000 train_runtime_s=50.00 tokens_per_second=219.7 global_step=38
""".splitlines()


def test_a_finished_jobs_status_shows_one_tokens_figure_and_the_epochs_step() -> None:
    from cloudtune.cli import _progress_lines
    from cloudtune.jobprogress import progress_from_log, summarize

    view = summarize(_record(), "succeeded", progress_from_log(LOG))
    p = view["progress"]
    assert p["step"] == 38 and p["epoch_step"] == 36 and p["tokens_per_second"] == pytest.approx(219.7)
    info = {"job_id": "j", "state": "succeeded", **view}
    step_line = _progress_lines(info)[0]
    assert "epoch 7.50 (at step 36)" in step_line and "219.7 tokens/s over the run" in step_line
    assert "3256" not in "\n".join(_progress_lines(info))


def test_a_running_jobs_tokens_figure_is_the_last_window() -> None:
    from cloudtune.cli import _progress_lines
    from cloudtune.jobprogress import progress_from_log, summarize

    view = summarize(_record(), "running", progress_from_log(LOG[:1]))
    assert view["progress"]["tokens_per_second_basis"] == "the last logging window"
    line = _progress_lines({"job_id": "j", "state": "running", **view})[0]
    assert "3256.0 tokens/s" in line and "over the run" not in line and "at step" not in line


def test_an_image_jobs_throughput_is_said_in_images() -> None:
    """The image recipe counts images in `tokens_per_second` (one log format for every recipe): status, its JSON and
    the report's throughput chart say images/s for a text-to-image job, tokens/s for the others."""
    from cloudtune.cli import _progress_lines
    from cloudtune.jobprogress import progress_from_log, summarize
    from cloudtune.report.figures import figures
    from cloudtune.report.history import parse_log

    image = _record()
    image.plan = {"spec": {"train": {"task": "text-to-image"}}}
    for state, said in (("succeeded", "219.7 images/s over the run"), ("running", "3256.0 images/s")):
        view = summarize(image, state, progress_from_log(LOG if state == "succeeded" else LOG[:1]))
        assert view["progress"]["throughput_unit"] == "images"
        assert said in _progress_lines({"job_id": "j", "state": state, **view})[0]
    assert "images / train_runtime_s" in summarize(image, "succeeded", progress_from_log(LOG))["progress"][
        "tokens_per_second_basis"]
    assert summarize(_record(), "succeeded", progress_from_log(LOG))["progress"]["throughput_unit"] == "tokens"
    from cloudtune.contracts.progress import throughput_unit
    from cloudtune.spec.image import IMAGE_TASK

    assert throughput_unit({"train": {"task": IMAGE_TASK}}) == "images"  # the spec's image task, spelled twice
    chart = next(f for f in figures(parse_log(LOG), "images") if f.name == "throughput")
    assert "219.7 images/s" in chart.note and "counts images" in chart.note


# ------------------------------------------------------------------------------------------- accelerators
def test_a_family_name_says_which_part_it_means() -> None:
    from cloudtune.catalog import load_catalog

    cat = load_catalog()
    assert cat.variants("A100") == ["A100-40GB", "A100-80GB"] and cat.variants("a100") == ["A100-40GB", "A100-80GB"]
    for one in ("A100-40GB", "A100-80GB", "a100-80g", "H100", "L4", "cpu"):
        assert cat.variants(one) == [] and cat.meaning_note(f"{one}:1") is None, one
    note = cat.meaning_note("A100:8")
    assert note and "A100 means A100-40GB (40 GB per device)" in note and "A100-80GB (80 GB per device)" in note
    shown = {o.accelerator for o in cat.offers(accelerator="A100")}
    assert shown == {"A100-40GB", "A100-80GB"}  # `catalog -a A100` lists both parts
    assert {o.accelerator for o in cat.offers(accelerator="A100-40GB")} == {"A100-40GB"}
    assert cat.resolve("aws", "a100", 8).instance_type == "ml.p4d.24xlarge"  # what it meant before, unchanged


def test_validate_and_every_dry_run_say_which_a100(tmp_path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / "job.yaml").write_text(
        "name: a\nresources: {accelerator: A100:8}\ncommand: python main.py\ncode: src\n"
        "image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1\nproviders:\n"
        '  aws: {region: us-east-1, role: "arn:aws:iam::123456789012:role/R", bucket: my-bucket}\n')
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / ".ct")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    valid = run("validate", "job.yaml")
    assert valid.returncode == 0 and "A100 means A100-40GB" in valid.stderr, valid.stderr
    dry = run("launch", "--dry-run", "-p", "aws", "job.yaml")
    assert dry.returncode == 0 and "note: resources.accelerator: A100 means A100-40GB" in dry.stdout, dry.stderr
    big = run("launch", "--dry-run", "-p", "aws", "job.yaml", "--set", "resources.accelerator=A100-80GB:8")
    assert "A100 means" not in big.stdout
    cost = next(line for line in big.stdout.splitlines() if line.startswith("estimated cost:"))
    assert "no list price for ml.p4de.24xlarge" in cost  # unknown, and why
    table = run("catalog", "-a", "A100", "-p", "aws")
    assert "ml.p4d.24xlarge" in table.stdout and "ml.p4de.24xlarge" in table.stdout


# ------------------------------------------------------------------------------------------- SDK chatter
def test_azure_identity_chatter_is_held_back(tmp_path) -> None:
    """DefaultAzureCredential with no credential logs each one it tried (about 15 lines) through Python's last-resort
    handler before cloudtune's own error line; the CLI holds the SDK's warnings back (CLOUDTUNE_DEBUG keeps them).
    Only offline credentials are tried here (no managed identity, no CLI tools), so nothing leaves the machine."""
    import os
    import subprocess
    import sys

    script = """
import sys
from cloudtune.clierrors import quiet_sdk_loggers
if sys.argv[1] == "quiet":
    quiet_sdk_loggers()
from azure.identity import DefaultAzureCredential
cred = DefaultAzureCredential(exclude_managed_identity_credential=True, exclude_cli_credential=True,
                              exclude_powershell_credential=True, exclude_developer_cli_credential=True,
                              exclude_visual_studio_code_credential=True, exclude_shared_token_cache_credential=True,
                              exclude_workload_identity_credential=True, exclude_interactive_browser_credential=True)
try:
    cred.get_token("https://management.azure.com/.default")
except Exception as exc:
    print("error: " + type(exc).__name__, file=sys.stderr)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CLOUDTUNE_DEBUG"))}
    env["HOME"] = str(tmp_path)

    def stderr(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path).stderr

    loud = stderr("loud")  # in a child: tests/azure would shadow the `azure` namespace package in this process
    if "No module named 'azure" in loud:
        pytest.skip("azure-identity is not installed")
    assert "DefaultAzureCredential failed" in loud  # what a user saw before
    quiet = stderr("quiet")
    assert quiet.strip().splitlines() == ["error: ClientAuthenticationError"], quiet
