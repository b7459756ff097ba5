"""The `sweep:` section: names and defaults, the checks against the job (each error names its field and line with a
fix), trial specs for train and command jobs, and the values a tuning service sends back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudtune.errors import SpecError
from cloudtune.spec import load_spec, trial_spec, validate_spec
from cloudtune.spec.sweep import (
    FULL_LEARNING_RATE, LORA_LEARNING_RATE, ParameterRange, coerce, command_arguments, largest_values, path_of_safe_name,
    safe_name, values_from_arguments,
)


def job(tmp_path: Path, sweep: dict, **train: object) -> dict:
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text('{"text": "a"}\n')
    return {"name": "sw", "inputs": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl")},
            "train": {"model": "gpt2", "data": {"train": "train", "eval": "eval"}, **train}, "sweep": sweep}


def issues(tmp_path: Path, data: dict) -> dict[str, tuple[str, int | None, str]]:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return {i.path: (i.message, i.line, i.hint) for i in err.value.issues}


def test_names_become_paths_and_auto_ranges_follow_lora(tmp_path: Path) -> None:
    spec = validate_spec(job(tmp_path, {"parameters": {"learning_rate": "auto", "lora.r": {"choice": [8, 16, 32]},
                                                       "batch_size": {"int": [4, 16]}}}, lora={}))
    ranges = spec.sweep.ranges()
    assert set(ranges) == {"hyperparameters.learning_rate", "lora.r", "hyperparameters.batch_size"}
    assert ranges["hyperparameters.learning_rate"].loguniform == LORA_LEARNING_RATE
    full = validate_spec(job(tmp_path, {}))  # no parameters: the learning rate, full fine-tuning's range
    assert full.sweep.ranges()["hyperparameters.learning_rate"].loguniform == FULL_LEARNING_RATE
    assert LORA_LEARNING_RATE[0] == pytest.approx(10 * FULL_LEARNING_RATE[0])
    assert (full.sweep.algorithm, full.sweep.max_trials, full.sweep.parallel_trials) == ("bayesian", 12, 2)
    assert full.sweep.objective.direction == "minimize"
    again = validate_spec(spec.model_dump(mode="json"))  # the dump (plans, sweep.json) validates to the same sweep
    assert again.sweep == spec.sweep


def test_refusals_name_the_field_line_and_fix(tmp_path: Path) -> None:
    found = issues(tmp_path, job(tmp_path, {"parameters": {
        "lora.r": {"choice": [8, 0]}, "hyperparameters.lerning_rate": {"uniform": [0, 1]},
        "warmup_ratio": {"uniform": [0, 2]}, "data.train": {"choice": ["a", "b"]}, "seed": "auto"},
        "objective": {"metric": "eval_accuracy"}}, lora={}))
    assert "does not fit train.lora.r" in found["sweep.parameters.lora.r"][0]
    assert found["sweep.parameters.lora.r"][1] is not None and "narrow the range" in found["sweep.parameters.lora.r"][2]
    assert "did you mean learning_rate" in found["sweep.parameters.hyperparameters.lerning_rate"][2]
    assert "warmup_ratio" in found["sweep.parameters.warmup_ratio"][0]
    assert "cannot vary between trials" in found["sweep.parameters.data.train"][0]
    assert "no default range" in found["sweep.parameters.seed"][0]
    assert "eval_loss" in found["sweep.objective.metric"][2]


def test_lora_option_without_lora_and_eval_metric_without_eval(tmp_path: Path) -> None:
    data = job(tmp_path, {"parameters": {"lora.r": {"choice": [8, 16]}}})
    assert "add `lora: {}`" in issues(tmp_path, data)["sweep.parameters.lora.r"][2]
    data = job(tmp_path, {"objective": {"metric": "eval_loss"}})
    data["train"]["data"]["eval"] = None
    assert "train.data.eval" in issues(tmp_path, data)["sweep.objective.metric"][0]


@pytest.mark.parametrize("bad, words", [
    ({"uniform": [1, 0]}, "is empty"),
    ({"loguniform": [0, 1]}, "low > 0"),
    ({"uniform": [0, 1], "choice": [1]}, "exactly one"),
    ({"uniform": [0, 1], "log": True}, "int ranges only"),
    ({"choice": [1, 1]}, "twice"),
])
def test_bad_ranges(bad: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ParameterRange.model_validate(bad)


def test_grid_takes_choice_and_int_only(tmp_path: Path) -> None:
    found = issues(tmp_path, job(tmp_path, {"algorithm": "grid", "parameters": {"learning_rate": {"uniform": [0.1, 0.2]}}}))
    assert "grid search takes choice or int" in found["sweep"][0]
    spec = validate_spec(job(tmp_path, {"algorithm": "grid", "parameters": {"batch_size": {"int": [2, 4]},
                                                                            "learning_rate": {"choice": [1e-4, 1e-3]}}}))
    assert spec.sweep.grid_size() == 6


def test_trial_spec_applies_values_and_drops_the_sweep(tmp_path: Path) -> None:
    spec = validate_spec(job(tmp_path, {"parameters": {"learning_rate": {"loguniform": [1e-5, 1e-3]},
                                                       "lora.r": {"choice": [8, 32]}}}, lora={}))
    trial = trial_spec(spec, {"hyperparameters.learning_rate": 2e-4, "lora.r": 32})
    assert trial.train.hyperparameters.learning_rate == 2e-4 and trial.train.lora.r == 32
    assert trial.sweep is None and "sweep" not in trial.model_dump()
    assert spec.train.lora.r == 16  # the sweep's own spec is unchanged
    assert largest_values(spec.sweep) == {"hyperparameters.learning_rate": 1e-3, "lora.r": 32}


def test_command_job_reads_arguments_and_env(tmp_path: Path) -> None:
    spec = validate_spec({"name": "c", "command": "python train.py --epochs 1", "code": str(tmp_path),
                          "sweep": {"parameters": {"lr": {"loguniform": [1e-5, 1e-3]}, "layers": {"choice": [2, 4]}},
                                    "objective": {"metric": "accuracy"}}})
    assert spec.sweep.objective.direction == "maximize"
    trial = trial_spec(spec, {"lr": 1e-4, "layers": 4})
    assert trial.command == "python train.py --epochs 1 --layers=4 --lr=0.0001"
    assert trial.env["CLOUDTUNE_SWEEP_LR"] == "0.0001" and trial.env["CLOUDTUNE_SWEEP_LAYERS"] == "4"
    assert command_arguments({"flag": True}) == ["--flag=true"]
    with pytest.raises(SpecError, match="letters, digits and '_'"):
        validate_spec({"name": "c", "command": "x", "code": str(tmp_path), "sweep": {"parameters": {"a.b": {"int": [1, 2]}}}})


def test_service_values_come_back_typed(tmp_path: Path) -> None:
    spec = validate_spec(job(tmp_path, {"parameters": {"batch_size": {"int": [4, 16]}, "lora.r": {"choice": [8, 16]},
                                                       "learning_rate": {"uniform": [0.001, 0.01]}}}, lora={}))
    assert safe_name("lora.r") == "lora__r" and path_of_safe_name("lora__r") == "lora.r"
    got = values_from_arguments(["--hyperparameters__batch_size=8.0", "--lora__r=16", "--learning_rate=0.005", "x"],
                                spec.sweep)
    assert got == {"hyperparameters.batch_size": 8, "lora.r": 16, "hyperparameters.learning_rate": 0.005}
    assert isinstance(got["hyperparameters.batch_size"], int)
    with pytest.raises(ValueError):
        coerce(spec.sweep.ranges()["lora.r"], "12")


def test_bounds_and_ranges_each_give_one_issue_with_a_fix(tmp_path: Path) -> None:
    """`max_trials: 0` and `parallel_trials: 0` say what to give; a range in `'auto' | {range}` is one issue, not
    also "Input should be 'auto'"."""
    found = issues(tmp_path, job(tmp_path, {"parameters": {"learning_rate": {"loguniform": [0, 1e-3]},
                                                           "lora.r": [4, 8]},
                                            "max_trials": 0, "parallel_trials": 0}, lora={}))
    assert found["sweep.max_trials"][2] == "give 1 or more" and found["sweep.max_trials"][1] is not None
    assert found["sweep.parallel_trials"][2] == "give 1 or more"
    assert "low > 0" in found["sweep.parameters.learning_rate"][0]
    assert found["sweep.parameters.lora.r"][0] == "a parameter's range is a mapping, not a list"
    assert found["sweep.parameters.lora.r"][2].startswith("write {choice: [4, 8]}")
    assert not any("'auto'" in message for message, _, _ in found.values())


def test_a_text_to_image_sweep_is_refused_with_a_fix(tmp_path: Path) -> None:
    """The image recipe reports no objective a tuning service reads: one clear refusal, not "use one of" nothing."""
    data = job(tmp_path, {"parameters": {"learning_rate": "auto"}}, lora={"r": 4})
    data["train"] = {"task": "text-to-image", "model": "./pipe", "lora": {"r": 4}, "data": {"train": "train"}}
    message, line, hint = issues(tmp_path, data)["sweep.objective.metric"]
    assert "task text-to-image cannot be swept yet" in message and line is not None
    assert hint.startswith("remove the sweep section")
