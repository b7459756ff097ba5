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


def _int_only(annotation: object) -> bool:
    """The option takes whole numbers and no fractions (told by pydantic itself, not by the code under test)."""
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(annotation)
    try:
        adapter.validate_python(3)
    except ValidationError:
        return False
    try:
        adapter.validate_python(3.5)
    except ValidationError:
        return True
    return False


def _int_options() -> list[str]:
    from cloudtune.spec.training import Hyperparameters, LoraSpec

    return ([f"hyperparameters.{n}" for n, f in Hyperparameters.model_fields.items() if _int_only(f.annotation)]
            + [f"lora.{n}" for n, f in LoraSpec.model_fields.items() if _int_only(f.annotation)])


def test_int_options_are_found_from_their_types() -> None:
    found = _int_options()
    for path in ("hyperparameters.batch_size", "hyperparameters.max_steps", "hyperparameters.seed", "lora.r",
                 "lora.alpha", "hyperparameters.gradient_accumulation_steps", "hyperparameters.eval_every",
                 "hyperparameters.max_seq_len", "hyperparameters.warmup_steps"):
        assert path in found
    assert "hyperparameters.learning_rate" not in found and "hyperparameters.epochs" not in found


@pytest.mark.parametrize("path", _int_options())
@pytest.mark.parametrize("kind, fix", [("uniform", "use {int: [8, 16]}"), ("loguniform", "use {int: [8, 16], log: true}")])
def test_a_real_range_on_an_int_option_is_refused_with_its_int_form(path: str, kind: str, fix: str,
                                                                    tmp_path: Path) -> None:
    """Only a range's ends were validated, and pydantic takes 8.0 as an int: every trial then failed on its fraction."""
    found = issues(tmp_path, job(tmp_path, {"parameters": {path: {kind: [8, 16]}}}, lora={}))
    message, line, hint = found[f"sweep.parameters.{path}"]
    assert message.startswith(f"train.{path} takes whole numbers (int), and a {kind} range draws fractional values")
    assert hint == fix and line is not None and len(found) == 1


def test_an_int_range_with_a_fractional_end_is_one_error(tmp_path: Path) -> None:
    found = issues(tmp_path, job(tmp_path, {"parameters": {"batch_size": {"int": [4.5, 16]}}}))
    assert list(found) == ["sweep.parameters.batch_size"]
    message, line, hint = found["sweep.parameters.batch_size"]
    assert message == "an int range takes whole-number ends (got [4.5, 16])" and line is not None
    assert hint == "use {int: [5, 16]}, or {uniform: [low, high]} for an option that takes fractions"


def test_a_fractional_real_range_suggests_the_whole_numbers_inside(tmp_path: Path) -> None:
    found = issues(tmp_path, job(tmp_path, {"parameters": {"batch_size": {"uniform": [2.5, 8.5]},
                                                           "seed": {"uniform": [0.2, 0.7]}}}))
    assert found["sweep.parameters.batch_size"][2] == "use {int: [3, 8]}"
    assert found["sweep.parameters.seed"][2] == "use {int: [0, 1]}"


@pytest.mark.parametrize("name, rng, words, fix", [
    ("lora.merge", {"int": [0, 1]}, "takes true or false (bool), and an int range draws numbers",
     "use {choice: [true, false]}"),
    ("gradient_checkpointing", {"uniform": [0, 1]}, "takes true or false (bool), and a uniform range",
     "use {choice: [true, false]}"),
    ("gradient_checkpointing", {"choice": [0, 1]}, "takes true or false (bool), and the choice 0 is a number",
     "use {choice: [true, false]}"),
    ("precision", {"uniform": [0, 1]}, "takes one of auto, fp32, bf16, fp16, and a uniform range draws numbers",
     "use {choice: [auto, fp32, bf16]} (values it takes)"),
    ("lora.target_modules", {"int": [1, 2]}, "an int range draws numbers", "use {choice: [auto]} (values it takes)"),
    ("max_steps", {"choice": [4, True]}, "takes whole numbers (int), and the choice true is a boolean",
     "give numbers, e.g. {choice: [8, 16]}"),
    ("learning_rate", {"choice": [1e-4, False]}, "takes numbers (float), and the choice false is a boolean",
     "give numbers, e.g. {choice: [8, 16]}"),
])
def test_a_range_the_option_type_cannot_take_is_refused(name: str, rng: dict, words: str, fix: str,
                                                        tmp_path: Path) -> None:
    message, line, hint = issues(tmp_path, job(tmp_path, {"parameters": {name: rng}}, lora={}))[f"sweep.parameters.{name}"]
    assert words in message and hint == fix and line is not None


def test_every_choice_value_is_checked_and_int_ranges_fit_float_options(tmp_path: Path) -> None:
    found = issues(tmp_path, job(tmp_path, {"parameters": {"lora.r": {"choice": [8, 16, 32, 0]},
                                                           "batch_size": {"choice": [4, 8, 9.5]},
                                                           "precision": {"choice": ["fp32", "fp64"]}}}, lora={}))
    assert "the value 0 does not fit train.lora.r" in found["sweep.parameters.lora.r"][0]
    assert "the value 9.5 does not fit" in found["sweep.parameters.batch_size"][0]
    assert "the value 'fp64' does not fit" in found["sweep.parameters.precision"][0]
    spec = validate_spec(job(tmp_path, {"parameters": {"epochs": {"int": [1, 3]}, "weight_decay": {"int": [0, 1]}}}))
    assert spec.sweep.ranges()["hyperparameters.epochs"].int == (1, 3)  # whole numbers are floats too
    message, _, hint = issues(tmp_path, job(tmp_path, {"parameters": {"warmup_ratio": {"choice": [0.1, 1.0]}}}))[
        "sweep.parameters.warmup_ratio"]
    assert "the value 1.0 does not fit" in message and hint == "give a share below 1, e.g. 0.03"  # the option's own fix


def test_text_numbers_in_a_choice_become_the_option_type(tmp_path: Path) -> None:
    """YAML 1.1 reads `1e-5` (no dot) as text; `learning_rate: 1e-5` is a number through pydantic, and so is a choice."""
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text('{"text": "a"}\n')
    path = tmp_path / "sweep.yaml"
    path.write_text("name: sw\ninputs: {train: train.jsonl, eval: eval.jsonl}\n"
                    "train: {model: gpt2, data: {train: train, eval: eval}, lora: {}}\n"
                    "sweep:\n  parameters:\n    learning_rate: {choice: [1e-5, 3e-5, '1e-4', 2.0e-4]}\n"
                    "    lora.r: {choice: [4, '8', 16.0]}\n    precision: {choice: [fp32, bf16]}\n")
    ranges = load_spec(path).sweep.ranges()
    assert ranges["hyperparameters.learning_rate"].choice == [1e-5, 3e-5, 1e-4, 2e-4]
    assert all(type(v) is float for v in ranges["hyperparameters.learning_rate"].choice)
    assert ranges["lora.r"].choice == [4, 8, 16] and all(type(v) is int for v in ranges["lora.r"].choice)
    assert ranges["hyperparameters.precision"].choice == ["fp32", "bf16"]
    assert largest_values(load_spec(path).sweep)["hyperparameters.learning_rate"] == 2e-4
    from cloudtune.kit.sweep import numbers

    assert numbers(ranges["hyperparameters.learning_rate"])  # a numeric parameter on Vertex, not a categorical one
    found = issues(tmp_path, job(tmp_path, {"parameters": {"learning_rate": {"choice": ["1e-5", 0.00001]}}}))
    assert "twice" in found["sweep.parameters.learning_rate"][0]


def test_text_numbers_in_a_command_choice_become_numbers(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: c\ncommand: python train.py\ncode: {tmp_path}\nsweep:\n  objective: {{metric: loss}}\n"
                    "  parameters:\n    lr: {choice: [1e-5, 3E+4, fast, '1.5']}\n")
    assert load_spec(path).sweep.ranges()["lr"].choice == [1e-5, 3e4, "fast", "1.5"]


@pytest.mark.parametrize("written, meant", [("off", "off"), ("no", "off"), ("false", "off"), ("'off'", "off"),
                                            ("on", "auto"), ("true", "auto"), ("auto", "auto")])
def test_early_stopping_off_as_yaml_1_1_reads_it(written: str, meant: str, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: c\ncommand: python train.py\ncode: {tmp_path}\nsweep:\n  objective: {{metric: loss}}\n"
                    f"  parameters: {{lr: {{loguniform: [1.0e-5, 1.0e-3]}}}}\n  early_stopping: {written}\n")
    assert load_spec(path).sweep.early_stopping == meant
    other = "auto" if meant == "off" else "off"
    assert load_spec(path, [f"sweep.early_stopping={other}"]).sweep.early_stopping == other
    with pytest.raises(SpecError, match="Input should be 'auto' or 'off'"):
        load_spec(path, ["sweep.early_stopping=sometimes"])


def test_a_grid_larger_than_max_trials_is_refused_everywhere(tmp_path: Path) -> None:
    """Every combination or none: SageMaker refused this while the local driver, Vertex AI and Azure ML ran a subset."""
    grid = {"algorithm": "grid", "parameters": {"lora.r": {"choice": [4, 8]}, "batch_size": {"int": [2, 4]}}}
    message, line, hint = issues(tmp_path, job(tmp_path, {**grid, "max_trials": 3}, lora={}))["sweep.max_trials"]
    assert message.startswith("the grid has 6 combinations and max_trials is 3") and line is not None
    assert hint == "raise max_trials to 6, give fewer values, or use algorithm: random"
    assert validate_spec(job(tmp_path, {**grid, "max_trials": 6}, lora={})).sweep.grid_size() == 6
    with pytest.raises(SpecError, match="the grid has 4 combinations and max_trials is 2"):
        validate_spec({"name": "c", "command": "x", "code": str(tmp_path), "sweep": {
            "algorithm": "grid", "max_trials": 2, "objective": {"metric": "loss"},
            "parameters": {"a": {"choice": [1, 2]}, "b": {"int": [0, 1]}}}})


def test_a_grid_over_an_auto_real_range_is_refused(tmp_path: Path) -> None:
    message, _, hint = issues(tmp_path, job(tmp_path, {"algorithm": "grid"}))["sweep.parameters.learning_rate"]
    assert "learning_rate: auto is the loguniform range" in message and hint.startswith("give it as {choice")


def test_too_many_choices_suggest_the_range_of_their_type() -> None:
    from cloudtune.kit.sweep import choices_fix

    assert choices_fix(ParameterRange(choice=list(range(1, 41))), 30) == "give at most 30 values, or the range {int: [1, 40]}"
    assert choices_fix(ParameterRange(choice=[0.1, 0.5, 0.2]), 2) == "give at most 2 values, or the range {uniform: [0.1, 0.5]}"
    assert choices_fix(ParameterRange(choice=["a", "b", "c"]), 2) == "give at most 2 values"
