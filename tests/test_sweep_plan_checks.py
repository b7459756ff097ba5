"""A sweep's plan-time checks see the whole sweep, not one trial of it.

1. A spec that `validate` accepts but whose re-validated dump or trial specs fail: the load-time validation refuses
   the same thing (the sweep is checked against the final spec: `data.eval` defaulted to null when no `eval` input
   exists; the train section's dump validates again), and a trial the train options refuse at plan time is one
   SpecError, never pydantic's dump.
2. Every value of a swept option (each choice, both booleans, both ends of a range) meets the checks a plain job with
   that value gets (precision and knobs against the accelerator, a local model's position limit), and the memory
   check sizes the memory-heaviest trial (gradient checkpointing off).

Offline; nothing trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudtune import api
from cloudtune.errors import SpecError, UnsupportedSpec
from cloudtune.kit.sweep import sweep_trial
from cloudtune.memory_check import heaviest_values
from cloudtune.spec import load_spec
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights

PROVIDERS = {
    "aws": {"role": "arn:aws:iam::123456789012:role/SageMaker", "bucket": "s3://bucket", "region": "us-east-1"},
    "gcp": {"project": "proj", "region": "us-central1", "bucket": "gs://bucket"},
    "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg", "workspace": "ws"},
}
LORA_7B = {"model": "meta-llama/Llama-2-7b-hf", "lora": {},
           "hyperparameters": {"batch_size": 2, "max_seq_len": 1024}}  # 35.8 GB without checkpointing, 15.6 GB with


def _model(base: Path) -> None:
    """A local model dir the preflight takes (config with a 128-position limit, placeholder weights, a tokenizer)."""
    (base / "model").mkdir(exist_ok=True)
    (base / "model/config.json").write_text('{"model_type": "gpt2", "n_positions": 128}\n')
    (base / "model/model.safetensors").write_bytes(placeholder_weights())
    (base / "model/tokenizer.json").write_text(PLACEHOLDER_TOKENIZER)


def _write(base: Path, *, train: dict[str, Any] | None = None, sweep: dict[str, Any] | None = None,
           accelerator: str = "cpu", eval_input: bool = True) -> Path:
    """A job.yaml (one key a line, so each field has its own line) of a LoRA job on the local model."""
    _model(base)
    (base / "train.jsonl").write_text('{"text": "the quick brown fox"}\n' * 8)
    (base / "eval.jsonl").write_text('{"text": "jumps over"}\n' * 4)
    inputs = {"train": "train.jsonl", **({"eval": "eval.jsonl"} if eval_input else {})}
    spec: dict[str, Any] = {"name": "sw", "resources": {"accelerator": accelerator}, "inputs": inputs,
                            "train": train or {"model": "./model", "lora": {"r": 8},
                                               "hyperparameters": {"max_steps": 4, "max_seq_len": 64}},
                            "providers": PROVIDERS}
    if sweep is not None:
        spec["sweep"] = sweep
    import yaml

    path = base / "job.yaml"
    path.write_text(yaml.safe_dump(spec, default_flow_style=False, sort_keys=False))
    return path


def _line(path: Path, key: str) -> int:
    """The 1-based line of the first line of `path` whose text starts (after indentation) with `key:`."""
    return next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:"))


def _cli(*args: str, home: Path) -> Any:
    from cloudtune.cli import main

    return CliRunner().invoke(main, list(args), env={"CLOUDTUNE_HOME": str(home)})


def _one_clear_error(res: Any, *needles: str) -> None:
    """Exit 2, one error naming what is wrong and how to fix it, no traceback or pydantic dump."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "pydantic" not in res.output and "CLOUDTUNE_DEBUG" not in res.output
    assert "To fix:" in res.output
    for needle in needles:
        assert needle in res.output, res.output


# ------------------------------------------------------------------------------------------------ 1. load time
@pytest.mark.parametrize("objective", [None, {"metric": "eval_loss"}, {"metric": "perplexity"}])
def test_an_eval_objective_without_an_eval_set_is_refused_at_load(tmp_path: Path, objective: Any) -> None:
    sweep = {"parameters": {"lora.r": {"choice": [4, 8]}}, **({"objective": objective} if objective else {})}
    path = _write(tmp_path, sweep=sweep, eval_input=False)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (issue,) = info.value.issues
    assert issue.path == "sweep.objective.metric" and "train.data.eval is not set" in issue.message
    assert "use train_loss" in issue.hint
    if objective:
        assert issue.line == _line(path, "metric")


def test_a_train_loss_objective_needs_no_eval_set(tmp_path: Path) -> None:
    path = _write(tmp_path, sweep={"parameters": {"lora.r": {"choice": [4, 8]}}, "objective": {"metric": "train_loss"}},
                  eval_input=False)
    spec = load_spec(path)
    assert spec.train is not None and spec.train.data.eval is None
    assert spec.sweep is not None and list(spec.sweep.parameters) == ["lora.r"]


@pytest.mark.parametrize(("hyperparameters", "extra"), [
    ({"eval_every": 3}, {}),
    ({"eval_every": 3, "early_stopping_patience": 2}, {}),
    ({"eval_every": 3}, {"keep_best": True}),
])
@pytest.mark.parametrize("swept", [True, False])
def test_an_eval_rule_the_eval_default_breaks_is_refused_at_its_line(
        tmp_path: Path, hyperparameters: dict[str, Any], extra: dict[str, Any], swept: bool) -> None:
    """No `eval` input: `data.eval` defaults to null, and the rules that need an eval set are checked on that final
    value (they once passed at load and failed when the dump was validated again: at plan time or in the job)."""
    train = {"model": "./model", "lora": {"r": 8}, **extra,
             "hyperparameters": {"max_steps": 4, "max_seq_len": 64, **hyperparameters}}
    sweep = {"parameters": {"lora.r": {"choice": [4, 8]}}, "objective": {"metric": "train_loss"}} if swept else None
    path = _write(tmp_path, train=train, sweep=sweep, eval_input=False)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (issue,) = info.value.issues
    assert issue.path == "train.hyperparameters.eval_every" and issue.line == _line(path, "eval_every")
    assert "needs an eval set" in issue.message and issue.hint.startswith("add the eval data as an input")


@pytest.mark.parametrize("command", [["validate"], ["launch", "--dry-run"], ["launch", "--dry-run", "-p", "aws"],
                                     ["launch", "--dry-run", "-p", "gcp"]])
def test_validate_and_every_dry_run_refuse_it_in_one_line(tmp_path: Path, command: list[str]) -> None:
    train = {"model": "./model", "lora": {"r": 8}, "hyperparameters": {"max_steps": 4, "eval_every": 3}}
    path = _write(tmp_path, train=train, sweep={"parameters": {"lora.r": {"choice": [4, 8]}}}, eval_input=False,
                  accelerator="cpu" if len(command) < 4 else "L4:1")
    res = _cli(*command[:1], str(path), *command[1:], home=tmp_path / "home")
    _one_clear_error(res, f"job.yaml:{_line(path, 'eval_every')}: train.hyperparameters.eval_every")
    assert res.output.count("error:") == 1


def test_the_eval_input_when_it_exists_is_still_the_default(tmp_path: Path) -> None:
    train = {"model": "./model", "lora": {"r": 8}, "hyperparameters": {"max_steps": 4, "eval_every": 3}}
    spec = load_spec(_write(tmp_path, train=train, sweep={"parameters": {"lora.r": {"choice": [4, 8]}}}))
    assert spec.train is not None and spec.train.data.eval == "eval"


# ------------------------------------------------------------------------------------------------ 1. plan time
SWEEP_TOGETHER = {"parameters": {"lora.quantize": {"choice": ["4bit"]}, "lora.merge": {"choice": [True, False]}}}


def test_a_trial_whose_values_are_refused_together_is_one_spec_error(tmp_path: Path) -> None:
    """Each value alone validates (checked at load); together (QLoRA and merge) the train options refuse them."""
    spec = load_spec(_write(tmp_path, sweep=SWEEP_TOGETHER, accelerator="L4:1"))
    with pytest.raises(SpecError) as info:
        sweep_trial(spec, {"lora.quantize": "4bit", "lora.merge": True})
    (issue,) = info.value.issues
    assert issue.path == "sweep.parameters" and issue.line == _line(tmp_path / "job.yaml", "parameters")
    assert issue.message.startswith("the trial with lora.quantize=4bit, lora.merge=true is not a valid job: ")
    assert "narrow the ranges" in issue.hint
    assert sweep_trial(spec, {"lora.quantize": "4bit", "lora.merge": False}).sweep is None


@pytest.mark.parametrize("provider", ["local", "aws", "gcp", "azure"])
def test_every_dry_run_refuses_such_a_trial_in_one_line(tmp_path: Path, provider: str) -> None:
    path = _write(tmp_path, sweep=SWEEP_TOGETHER, accelerator="cpu" if provider == "local" else "L4:1")
    args = ["launch", str(path), "--dry-run", "-p", provider]
    _one_clear_error(_cli(*args, home=tmp_path / "home"), "sweep.parameters: the trial with lora.quantize=4bit")


# ------------------------------------------------------------------------------------------------ 2. every value
@pytest.mark.parametrize(("accelerator", "choice", "refused", "commands"), [
    ("cpu", ["fp32", "fp16"], "fp16", [["validate"], ["launch", "--dry-run"]]),
    ("T4:1", ["fp16", "bf16"], "bf16", [["validate"], ["launch", "--dry-run", "-p", "aws"],
                                         ["launch", "--dry-run", "-p", "gcp"]]),
])
def test_each_precision_of_a_choice_meets_the_accelerator(tmp_path: Path, accelerator: str, choice: list[str],
                                                          refused: str, commands: list[list[str]]) -> None:
    """The largest trial takes the first text of a choice; the other values are checked as well."""
    path = _write(tmp_path, sweep={"parameters": {"precision": {"choice": choice}}}, accelerator=accelerator)
    for command in commands:
        res = _cli(*command[:1], str(path), *command[1:], home=tmp_path / "home")
        _one_clear_error(res, f"job.yaml:{_line(path, 'precision')}: sweep.parameters.precision: the value {refused} ",
                         f"To fix: remove {refused} from the choice")


def test_the_api_refuses_it_too_and_every_value_that_runs_passes(tmp_path: Path) -> None:
    path = _write(tmp_path, sweep={"parameters": {"precision": {"choice": ["fp16", "bf16"]}}}, accelerator="T4:1")
    with pytest.raises(SpecError, match="the value bf16 would be refused"):
        api.plan(str(path), provider="azure")
    ok = _write(tmp_path, sweep={"parameters": {"precision": {"choice": ["fp32", "bf16"]}}})
    assert api.plan(str(ok), provider="local").job_name.startswith("sw-")


def test_each_optimizer_of_a_choice_meets_the_accelerator(tmp_path: Path) -> None:
    sweep = {"parameters": {"optimizer": {"choice": ["adamw", "adamw_8bit", "paged_adamw_8bit"]}}}
    path = _write(tmp_path, sweep=sweep)
    with pytest.raises(SpecError) as info:
        api.plan(str(path), provider="local")
    issues = info.value.issues
    assert [i.path for i in issues] == ["sweep.parameters.optimizer"] * 2
    assert "the value adamw_8bit would be refused" in issues[0].message and "bitsandbytes" in issues[0].message
    assert issues[1].hint.startswith("remove paged_adamw_8bit from the choice")


def test_both_ends_of_a_range_meet_the_models_position_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, sweep={"parameters": {"max_seq_len": {"int": [32, 256]}}})
    res = _cli("validate", str(path), home=tmp_path / "home")
    _one_clear_error(res, "sweep.parameters.max_seq_len: the value 256 would be refused", "128",
                     "To fix: narrow the range so that it leaves 256 out")


def test_a_problem_of_the_spec_itself_is_the_plain_jobs_to_report(tmp_path: Path) -> None:
    """fp16 on cpu is refused as the spec's own value, once, not again for each swept value."""
    train = {"model": "./model", "lora": {"r": 8}, "hyperparameters": {"max_steps": 4, "precision": "fp16"}}
    path = _write(tmp_path, train=train, sweep={"parameters": {"lora.r": {"choice": [4, 8]}}})
    res = _cli("validate", str(path), home=tmp_path / "home")
    assert res.exit_code == 2 and "sweep.parameters" not in res.output
    assert res.output.count("fp16 mixed precision needs a CUDA GPU") == 1


# ------------------------------------------------------------------------------------------------ 2. memory
@pytest.mark.parametrize("choice", [[True, False], [False, True]])
def test_the_memory_check_sizes_the_trial_without_gradient_checkpointing(tmp_path: Path, choice: list[bool]) -> None:
    """Checkpointing on fits an L4 (15.6 GB); off (35.8 GB) it does not: the sweep is refused in either order."""
    sweep = {"parameters": {"gradient_checkpointing": {"choice": choice}}, "objective": {"metric": "train_loss"}}
    path = _write(tmp_path, train=LORA_7B, sweep=sweep, accelerator="L4:1", eval_input=False)
    spec = load_spec(path)
    assert heaviest_values(spec, "gcp", "g2-standard-8")["hyperparameters.gradient_checkpointing"] is False
    with pytest.raises(UnsupportedSpec, match="over the 24 GB of one L4"):
        api.plan(str(path), provider="gcp")


def test_the_plan_names_the_heaviest_trial_where_it_is_not_the_largest(tmp_path: Path) -> None:
    plans = {}
    for choice in ([True, False], [False, True]):
        sweep = {"parameters": {"gradient_checkpointing": {"choice": choice},
                                "lr_scheduler": {"choice": ["cosine", "linear"]}},
                 "objective": {"metric": "train_loss"}}
        path = _write(tmp_path, train=LORA_7B, sweep=sweep, accelerator="A100-40GB:1", eval_input=False)
        plans[choice[0]] = api.plan(str(path), provider="gcp")
    assert plans[True].memory == plans[False].memory
    assert plans[True].memory is not None and plans[True].memory["estimate"]["gradient_checkpointing"] is False
    heaviest = [n for n in plans[True].notes if "memory-heaviest trial" in n]
    assert heaviest == ["sweep: the memory estimate and check are those of the memory-heaviest trial "
                        "(hyperparameters.gradient_checkpointing=false, hyperparameters.lr_scheduler=cosine)"]
    assert not [n for n in plans[False].notes if "memory-heaviest trial" in n]  # the largest trial is the heaviest
    assert json.dumps(plans[False].memory)  # the section stays plain data
