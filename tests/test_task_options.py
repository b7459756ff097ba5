"""Options that would be ignored without a word are refused by name, with the fix (no torch, no network):

- a `train.data` option the task's recipe does not read (`cloudtune.spec.data.TASK_DATA_OPTIONS`: e.g. text_field on
  task preference, which reads TRL's field names), and the transformers loading options (revision,
  trust_remote_code, attn_implementation) on the tasks that load their model with another loader;
- a warmup that covers the whole run (warmup_steps >= max_steps, warmup_ratio 1), and its warning in the job when
  the run's length is known only there (`cloudtune.train.knobs.warmup_warning`);
- a Hub-only option (`train.revision`) with a model that is no Hub id: a local path, an input (local or remote), a
  `job:<JOB>` model (`cloudtune.preflight.hub_only_problems`, at plan time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import SpecError
from cloudtune.jobinputs import with_model_input
from cloudtune.jobmodel import resolve_job_model
from cloudtune.preflight import PreflightError, check_spec_inputs
from cloudtune.spec import TASKS, DataSpec, TrainSpec, load_spec, validate_spec
from cloudtune.spec.data import TASK_DATA_OPTIONS
from cloudtune.train.knobs import warmup_warning
from tests.test_preflight import model_dir

SAMPLE = {  # a value other than the default, for each train.data option
    "format": "text", "text_field": "body", "prompt_field": "question", "completion_field": "answer",
    "messages_field": "conversation", "chat_template": "{{ messages }}", "label_field": "category",
    "labels": ["a", "b"], "packing": True, "streaming": True, "instance_prompt": "a photo of sks dog",
    "caption_dropout": 0.1, "random_flip": True, "center_crop": False, "bucketing": False,
}
MODELS = {"text-to-image": "stable-diffusion-v1-5/stable-diffusion-v1-5", "text-to-audio": "facebook/musicgen-small"}


def train_of(task: str, **train: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"task": task, "model": MODELS.get(task, "gpt2")}
    if task == "text-to-image":
        base["lora"] = {"r": 4}
    return {**base, **train}


def spec(train: dict[str, Any], tmp: Path | None = None, **top: Any) -> Any:
    data = {"name": "opts", "inputs": {"train": "/tmp"}, "resources": {"accelerator": "cpu"}, "train": train, **top}
    return validate_spec(data, base_dir=tmp)


def refusal(train: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        spec(train)
    return str(err.value)


def test_the_table_covers_every_task_and_option() -> None:
    """Every task has its row, and every data option (but train and eval, which all read) is read by some task:
    a new option must be placed, or every task would refuse it."""
    assert set(TASK_DATA_OPTIONS) == set(TASKS)
    placed = {name for names in TASK_DATA_OPTIONS.values() for name in names}
    assert placed == set(DataSpec.model_fields) - {"train", "eval"} == set(SAMPLE)


UNREAD = [(task, name) for task in TASKS for name in sorted(SAMPLE) if name not in TASK_DATA_OPTIONS[task]]


@pytest.mark.parametrize("task, name", UNREAD)
def test_a_data_option_the_task_does_not_read_is_refused_by_name(task: str, name: str) -> None:
    message = refusal(train_of(task, data={"train": "train", name: SAMPLE[name]}))
    assert f"train.data.{name} " in message, message


@pytest.mark.parametrize("task, name", [(t, n) for t in TASKS for n in TASK_DATA_OPTIONS[t]
                                        if n not in ("streaming", "chat_template", "labels")])
def test_a_data_option_the_task_reads_passes(task: str, name: str) -> None:
    spec(train_of(task, data={"train": "train", name: SAMPLE[name]}))


@pytest.mark.parametrize("name", ["text_field", "prompt_field", "completion_field", "messages_field", "label_field",
                                  "format", "chat_template"])
def test_preference_refuses_each_data_option_it_ignores(name: str) -> None:
    """The new-user trial's case (text_field: body) and its kind: every field-name option, and format and
    chat_template, are ignored by the preference recipe (it reads prompt, chosen, rejected / completion, label)."""
    message = refusal(train_of("preference", data={"train": "train", name: SAMPLE[name]}))
    assert f"train.data.{name} does not apply to task preference, which reads TRL's preference fields by their own " \
           f"names (prompt, chosen, rejected; or prompt, completion, label), so it would be ignored" in message
    assert "To fix: " + ("rename the record fields to those names" if name.endswith("_field") else "remove it") \
        in message


def test_the_refusal_points_at_the_line_of_the_option(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "job.yaml").write_text("name: t\ninputs: {train: data.jsonl}\ntrain:\n  task: preference\n"
                                       "  model: gpt2\n  data:\n    train: train\n    text_field: body\n")
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "job.yaml")
    [issue] = err.value.issues
    assert (issue.path, issue.line) == ("train.data.text_field", 8), issue


@pytest.mark.parametrize("task", TASKS)
def test_the_job_config_of_every_task_validates_again_in_the_container(task: str) -> None:
    """The job's config is a dump of the spec, defaults included (text_field: text), re-validated in the
    container: a default value is never refused."""
    train = spec(train_of(task)).train
    assert TrainSpec.model_validate(train.model_dump(mode="json")) == train
    spec(train_of(task, data={"train": "train", "text_field": "text"}))  # written out, as the default


@pytest.mark.parametrize("task", ["text-to-image", "text-to-audio"])
@pytest.mark.parametrize("option, value", [("revision", "v1.0"), ("trust_remote_code", True),
                                           ("attn_implementation", "sdpa")])
def test_loading_options_are_refused_where_the_recipe_has_its_own_loader(task: str, option: str, value: Any) -> None:
    message = refusal(train_of(task, **{option: value}))
    assert f"train.{option} does not apply to task {task}" in message and "To fix: remove it" in message


@pytest.mark.parametrize("task", ["causal-lm", "seq-classification", "preference"])
def test_loading_options_pass_on_the_transformers_tasks(task: str) -> None:
    spec(train_of(task, revision="v1.0", trust_remote_code=True, attn_implementation="sdpa"))


# ------------------------------------------------------------------------------------------------------- warmup
@pytest.mark.parametrize("warmup, max_steps", [(50, 2), (2, 2)])
def test_a_warmup_as_long_as_the_run_is_refused(tmp_path: Path, warmup: int, max_steps: int) -> None:
    (tmp_path / "job.yaml").write_text("name: t\ninputs: {train: /tmp}\ntrain:\n  model: gpt2\n  hyperparameters:\n"
                                       f"    max_steps: {max_steps}\n    warmup_steps: {warmup}\n")
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "job.yaml")
    [issue] = err.value.issues
    assert (issue.path, issue.line) == ("train.hyperparameters.warmup_steps", 7), issue
    assert issue.message == (f"hyperparameters.warmup_steps ({warmup}) is not below max_steps ({max_steps}): the "
                             f"whole run would be warmup, so the learning rate would never reach learning_rate")
    assert issue.hint.startswith("lower warmup_steps below max_steps"), issue.hint


def test_a_warmup_ratio_of_the_whole_run_is_refused_and_shorter_warmups_pass() -> None:
    message = refusal(train_of("causal-lm", hyperparameters={"warmup_ratio": 1}))
    assert "hyperparameters.warmup_ratio 1.0 makes the whole run warmup" in message and "To fix: " in message
    for hp in ({"warmup_steps": 1, "max_steps": 2}, {"warmup_steps": 50}, {"warmup_ratio": 0.99, "max_steps": 2}):
        spec(train_of("causal-lm", hyperparameters=hp))


@pytest.mark.parametrize("warmup, total, warned", [
    (50, 2, True), (2, 2, True), (1, 2, False), (0, 2, False),
    (0.5, 2, False),  # warmup_ratio, as knob_arguments passes it: always ends within the run
    (50, 0, False), (50, -1, False),  # the run's length is unknown
])
def test_the_job_warns_when_the_warmup_covers_its_steps(warmup: float, total: int, warned: bool) -> None:
    """Without max_steps the run's length is known in the job only (the Trainer's state.max_steps)."""
    line = warmup_warning(warmup, total)
    assert (line is not None) == warned
    if line:
        assert line.startswith(f"warning: hyperparameters.warmup_steps ({warmup}) is not below this run's {total} "
                               "optimizer steps"), line


# ----------------------------------------------------------------------------------------- Hub-only options
def preflight(spec_: Any) -> list[str]:
    try:
        check_spec_inputs(with_model_input(spec_))
    except PreflightError as exc:
        return exc.problems
    return []


def local_project(tmp: Path, task: str = "preference") -> dict[str, str]:
    model_dir(tmp / "models/m")
    (tmp / "data.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 3 if task == "preference"
                                    else '{"text": "hello"}\n')
    return {"train": "data.jsonl"}


@pytest.mark.parametrize("task", ["preference", "causal-lm"])
def test_a_revision_of_a_local_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    monkeypatch.chdir(tmp_path)
    inputs = local_project(tmp_path, task)
    [problem] = preflight(spec(train_of(task, model="./models/m", revision="v1.0"), tmp_path, inputs=inputs))
    assert problem.startswith("train.revision 'v1.0': train.model is the local path models/m, not a Hub model id, "
                              "and a revision picks a branch, tag or commit of a Hub repository only"), problem
    assert "To fix: remove `revision:`" in problem


@pytest.mark.parametrize("uri, shown", [("models/m", "the local path models/m"),
                                        ("s3://bucket/models/m", "input 'm' (s3://bucket/models/m)")])
def test_a_revision_of_a_model_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str,
                                                shown: str) -> None:
    monkeypatch.chdir(tmp_path)
    inputs = {**local_project(tmp_path), "m": uri}
    [problem] = preflight(spec(train_of("preference", model="m", revision="main"), tmp_path, inputs=inputs))
    assert problem.startswith(f"train.revision 'main': train.model is {shown}, not a Hub model id"), problem


@dataclass
class FinishedJob:
    job_id: str
    model_uri: str
    state: str = "succeeded"
    plan: dict[str, Any] | None = None


def test_a_revision_of_a_jobs_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inputs = local_project(tmp_path)
    job = FinishedJob("sft-1", str(tmp_path / "models/m"))
    resolved = resolve_job_model(spec(train_of("preference", model="job:sft-1", revision="v2"), tmp_path,
                                      inputs=inputs), None, lambda _: job)
    [problem] = preflight(resolved)
    assert problem.startswith("train.revision 'v2': train.model is the local path models/m, not a Hub model id")


def test_a_revision_of_a_hub_model_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inputs = local_project(tmp_path)
    assert preflight(spec(train_of("preference", revision="v1.0"), tmp_path, inputs=inputs)) == []


def test_validate_refuses_a_local_models_revision_in_one_line(tmp_path: Path) -> None:
    """The new-user trial's case through the CLI: exit 2, one error line with the fix."""
    local_project(tmp_path)
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "t", "inputs": {"train": "data.jsonl"}, "train": {
        "task": "preference", "model": "./models/m", "revision": "v1.0"}}))
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / ".ct"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "cloudtune.cli", "validate", "job.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: train.revision 'v1.0'") and "To fix:" in errors[0]
