"""The `sweep:` section of a job spec: which train options a hyperparameter sweep varies, how, toward what.

A sweep runs the job (`train:` or `command:`) as trials, each an ordinary job whose spec is `trial_spec(spec, values)`:
the values are chosen outside the job (by Optuna locally, by the cloud's tuning service) and written into the
trial's job config before any rank starts, so every rank of a multi-process trial reads the same values.

Parameter names. Under `train:`, a name is a path below `train` (`lora.r`, `hyperparameters.learning_rate`); a bare
hyperparameter name (`learning_rate`, `batch_size`) means `hyperparameters.<name>`, and the model keeps the full
path. Under `command:`, a name is a plain identifier that the command reads as `--<name>=<value>` arguments and as the
environment variable `CLOUDTUNE_SWEEP_<NAME>` (upper case; see `command_arguments`, `command_env`).
Clouds that refuse dots in names (Azure ML search spaces) use `safe_name(path)` (`lora.r` -> `lora__r`) and
`path_of_safe_name` back.

Pure: pydantic and the standard library only (the train spec is checked through the object it is given).
"""

from __future__ import annotations

import math
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Scalar = Union[bool, int, float, str]
Whole = int
"""`int` under another name: ParameterRange has a field called `int` (the spec's own word)."""
"""A `choice` value: a number, a text or a boolean."""

HYPERPARAMETERS = "hyperparameters"
SWEEP_ENV_PREFIX = "CLOUDTUNE_SWEEP_"
"""Command jobs read each value from `CLOUDTUNE_SWEEP_<NAME>` (NAME upper case, `.` as `__`)."""

COMMAND_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PATH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}$")

LORA_LEARNING_RATE = (5e-5, 5e-3)
"""`learning_rate: auto` with LoRA: log-uniform over [5e-5, 5e-3]. The best LoRA learning rate is about ten times the
full fine-tuning one (Biderman et al., "LoRA Learns Less and Forgets Less", 2024; Schulman et al., "LoRA Without Regret",
Thinking Machines, 2025), so the range is FULL_LEARNING_RATE times ten."""
FULL_LEARNING_RATE = (5e-6, 5e-4)
"""`learning_rate: auto` for a full fine-tune: log-uniform over [5e-6, 5e-4], around the 1e-5 .. 1e-4 used to fine-tune
pretrained transformers (Devlin et al., BERT, 2019: 2e-5 .. 5e-5; Ouyang et al., InstructGPT SFT, 2022: 9.65e-6)."""
AUTO_RANGES: dict[str, dict[str, Any]] = {
    "lora.r": {"choice": [8, 16, 32, 64]},
    "lora.alpha": {"choice": [16, 32, 64]},
    "lora.dropout": {"uniform": [0.0, 0.1]},
    "hyperparameters.batch_size": {"choice": [4, 8, 16, 32]},
    "hyperparameters.warmup_ratio": {"uniform": [0.0, 0.1]},
    "hyperparameters.weight_decay": {"uniform": [0.0, 0.1]},
}
"""`<name>: auto` for other options: the ranges of the LoRA paper's sweeps (Hu et al., 2021: r in 1..64, alpha 16-32,
dropout 0-0.1) and the usual transformer fine-tuning grid (batch 4..32, warmup and weight decay 0-0.1, as in the
Hugging Face Trainer's hyperparameter_search examples)."""

METRICS: dict[str, tuple[str, ...]] = {
    "causal-lm": ("eval_loss", "perplexity", "train_loss"),
    "seq-classification": ("eval_loss", "eval_accuracy", "eval_f1", "train_loss"),
}
"""What each recipe reports (cloudtune.contracts.logfmt's eval and train-done lines; eval_* and perplexity need an eval
set): the metrics an objective may name."""
MAXIMIZED = ("eval_accuracy", "eval_f1", "accuracy", "f1")
"""Metrics whose default goal is maximize; every other metric is minimized unless `goal` says otherwise."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


def _unset(value: Any) -> bool:
    """Left out of dumps: a range kind not used, `log: false`."""
    return value is None or value is False


class ParameterRange(_Strict):
    """One parameter's search space: exactly one of `uniform`, `loguniform`, `int` (with `log`), `choice`."""

    uniform: tuple[float, float] | None = Field(None, exclude_if=_unset, description="[low, high]: any real number in between")
    loguniform: tuple[float, float] | None = Field(None, exclude_if=_unset, description="[low, high], both > 0: uniform in log space")
    int: tuple[Whole, Whole] | None = Field(None, exclude_if=_unset, description="[low, high]: a whole number, both ends included")
    log: bool = Field(False, exclude_if=_unset, description="with int: sample in log space")
    choice: list[Scalar] | None = Field(None, exclude_if=_unset, min_length=1, max_length=1000, description="one of these values")

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        """A bare list (`lora.r: [8, 16]`, as many tuning tools write a choice) is refused with its mapping form."""
        if isinstance(data, list):
            shown = ", ".join(str(v) for v in data[:8]) + (", ..." if len(data) > 8 else "")
            raise ValueError(f"a parameter's range is a mapping, not a list\nTo fix: write {{choice: [{shown}]}} for "
                             f"these values, or a range such as {{uniform: [low, high]}}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _whole_int_ends(cls, data: Any) -> Any:
        """An `int` range with a fractional end (`{int: [4.5, 16]}`) is one error with its fix, located at the
        parameter (not at `int.0`, beside a noise error for `auto`)."""
        ends = data.get("int") if isinstance(data, dict) else None
        if isinstance(ends, (list, tuple)) and any(isinstance(e, float) and not e.is_integer() for e in ends):
            inside = [math.ceil(ends[0]), math.floor(ends[-1])] if all(isinstance(e, (int, float)) for e in ends) else None
            raise ValueError(f"an int range takes whole-number ends (got {list(ends)})\nTo fix: "
                             + (f"use {{int: [{inside[0]}, {inside[1]}]}}, or " if inside else "")
                             + "{uniform: [low, high]} for an option that takes fractions")
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> "ParameterRange":
        given = [k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, int, choice (got {', '.join(given) or 'none'})\nTo fix: "
                             "e.g. {loguniform: [1e-5, 1e-3]} or {choice: [8, 16, 32]}")
        if self.log and self.int is None:
            raise ValueError("log applies to int ranges only\nTo fix: for real numbers use loguniform")
        bounds = self.bounds
        if bounds is not None:
            low, high = bounds
            if not low < high:
                raise ValueError(f"the range [{low}, {high}] is empty\nTo fix: give [low, high] with low < high")
            if (self.loguniform is not None or self.log) and low <= 0:
                raise ValueError(f"a log-scaled range needs low > 0 (got {low})\nTo fix: e.g. [1e-5, 1e-3]")
        if self.choice is not None and len({repr(v) for v in self.choice}) != len(self.choice):
            raise ValueError("choice lists a value twice\nTo fix: give each value once")
        return self

    @property
    def kind(self) -> Literal["uniform", "loguniform", "int", "choice"]:
        return next(k for k in ("uniform", "loguniform", "int", "choice") if getattr(self, k) is not None)  # type: ignore[return-value]

    @property
    def bounds(self) -> tuple[float, float] | None:
        """[low, high] of a numeric range; None for choice."""
        for key in ("uniform", "loguniform", "int"):
            if getattr(self, key) is not None:
                return tuple(getattr(self, key))  # type: ignore[return-value]
        return None

    @property
    def log_scale(self) -> bool:
        return self.loguniform is not None or self.log

    def samples(self) -> list[Scalar]:
        """Values that validation applies to the train spec: both ends of a range, every choice."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.bounds  # type: ignore[misc]
        return [int(low), int(high)] if self.int is not None else [float(low), float(high)]

    def grid(self) -> list[Scalar]:
        """Every value of a grid axis (choice, or each whole number of an int range); ValueError for real ranges."""
        if self.choice is not None:
            return list(self.choice)
        if self.int is not None:
            return list(range(self.int[0], self.int[1] + 1))
        raise ValueError(f"a {self.kind} range has no grid")


class Objective(_Strict):
    metric: str = Field("eval_loss", description="a metric the recipe reports (eval_loss, eval_accuracy, ...) or, for a "
                        "command job, that the command reports")
    goal: Literal["minimize", "maximize"] | None = Field(
        None, description="null = maximize for accuracy and f1, minimize for everything else")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not COMMAND_NAME.match(v):
            raise ValueError(f"{v!r} is not a metric name\nTo fix: use letters, digits and '_', e.g. eval_loss")
        return v

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        if self.goal is not None:
            return self.goal
        return "maximize" if self.metric in MAXIMIZED else "minimize"


class SweepSpec(_Strict):
    """A hyperparameter sweep over the job. Defaults are sized for a small budget:

    - `parameters`: `{learning_rate: auto}` when left out, the option that matters most (LORA_LEARNING_RATE /
      FULL_LEARNING_RATE); `auto` is allowed for the options in AUTO_RANGES as well.
    - `algorithm: bayesian` (Optuna's TPE locally; each cloud's Bayesian/Vizier search): with a dozen trials a model
      of the results finds a good learning rate in fewer trials than random search (Bergstra et al., NeurIPS 2011;
      Optuna's and SageMaker's documentation recommend it for small budgets).
    - `max_trials: 12`: three or four rounds of `parallel_trials`; SageMaker's guidance is to start around ten
      trials per parameter and narrow the ranges rather than run more.
    - `parallel_trials: 2`: a Bayesian search learns from finished trials only, so fewer at once makes better use
      of the budget (SageMaker "Best practices for hyperparameter tuning": run trials sequentially or few at once);
      locally it is also bounded by the machine's cores or GPUs.
    - `early_stopping: auto`: stop a trial whose intermediate objective is worse than the median of earlier trials
      at the same step (the median stopping rule of Google Vizier, Golovin et al. 2017; SageMaker's `Auto`; Optuna's
      MedianPruner). It acts only when the job evaluates during training (`hyperparameters.eval_every`).
    - `max_failed_trials: 3`: a spec that fails every trial stops after three failures instead of spending the whole
      budget (Vertex AI's `maxFailedTrialCount`; locally the same rule).
    """

    parameters: dict[str, Union[Literal["auto"], ParameterRange]] = Field(
        default_factory=lambda: {"learning_rate": "auto"}, min_length=1, max_length=100,
        description="option path under train (lora.r, hyperparameters.learning_rate; a bare name means "
        "hyperparameters.<name>) or, for a command job, an argument name -> its range, or auto")
    objective: Objective = Field(default_factory=Objective)
    algorithm: Literal["bayesian", "random", "grid"] = Field("bayesian", description="how trials' values are chosen")
    max_trials: int = Field(12, ge=1, le=10_000, description="trials in all")
    parallel_trials: int = Field(2, ge=1, le=1_000, description="trials at once (locally also bounded by cores/GPUs)")
    early_stopping: Literal["auto", "off"] = Field("auto", description="stop trials worse than the median (needs eval_every)")
    max_failed_trials: int = Field(3, ge=0, le=10_000, description="stop the sweep after this many failed trials; 0 = never")

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_word(cls, v: Any) -> Any:
        """YAML 1.1 reads a bare `off` (and `no`, `false`) as false and `on`/`yes`/`true` as true, in the file and in
        `--set sweep.early_stopping=off`: the booleans are taken as the words they stand for (false -> off,
        true -> auto, the only way early stopping is on)."""
        if isinstance(v, bool):
            return "auto" if v else "off"
        return v

    @field_validator("parameters")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not PATH_NAME.match(name):
                raise ValueError(f"{name!r} is not an option path\nTo fix: write e.g. learning_rate, lora.r or "
                                 "hyperparameters.batch_size")
        return v

    @model_validator(mode="after")
    def _grid(self) -> "SweepSpec":
        if self.algorithm == "grid":
            real = [n for n, r in self.parameters.items() if isinstance(r, ParameterRange) and r.kind not in ("choice", "int")]
            if real:
                raise ValueError(f"grid search takes choice or int ranges only; {', '.join(real)} is a real range\nTo fix: "
                                 "give it as {choice: [...]}, or use algorithm: bayesian or random")
        if self.parallel_trials > self.max_trials:
            self.parallel_trials = self.max_trials
        return self

    def ranges(self) -> dict[str, ParameterRange]:
        """The parameters with `auto` resolved (call on a sweep that passed `check_sweep`, which resolves them)."""
        return {k: v for k, v in self.parameters.items() if isinstance(v, ParameterRange)}

    def grid_size(self) -> int:
        return math.prod(len(r.grid()) for r in self.ranges().values())


# ---------------------------------------------------------------------------------------------------------------
# names and values
# ---------------------------------------------------------------------------------------------------------------

def full_path(name: str, *, command: bool = False) -> str:
    """The canonical name of a parameter: `learning_rate` -> `hyperparameters.learning_rate` for a train job."""
    if command or "." in name:
        return name
    return f"{HYPERPARAMETERS}.{name}"


def safe_name(path: str) -> str:
    """A name without dots for services that refuse them (Azure ML search spaces): `lora.r` -> `lora__r`."""
    return path.replace(".", "__")


def path_of_safe_name(name: str) -> str:
    """The inverse of `safe_name`."""
    return name.replace("__", ".")


def env_name(path: str) -> str:
    """The environment variable a command job reads a value from: `lr` -> `CLOUDTUNE_SWEEP_LR`."""
    return SWEEP_ENV_PREFIX + safe_name(path).upper()


def format_value(value: Scalar) -> str:
    """A value as an argument or variable carries it: `true`/`false`, integers without a point, floats by repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def command_arguments(values: dict[str, Scalar]) -> list[str]:
    """`--<name>=<value>` for each value, in name order (the form Vertex AI passes tuned values in)."""
    return [f"--{name}={format_value(values[name])}" for name in sorted(values)]


def command_env(values: dict[str, Scalar]) -> dict[str, str]:
    return {env_name(name): format_value(value) for name, value in sorted(values.items())}


def coerce(rng: ParameterRange, raw: Any) -> Scalar:
    """A value a tuning service returned, as the range's own type: services report integers as doubles (`16.0`) and
    choices as text; a choice maps back to the listed value whose text matches. Raises ValueError when outside."""
    if rng.choice is not None:
        for option in rng.choice:
            if option == raw or format_value(option) == str(raw) or str(option) == str(raw):
                return option
        try:
            number = float(raw)
        except (TypeError, ValueError):
            number = None
        for option in rng.choice:
            if number is not None and not isinstance(option, (bool, str)) and float(option) == number:
                return option
        raise ValueError(f"{raw!r} is not one of {rng.choice}")
    number = float(raw)
    if rng.int is not None:
        if number != round(number):
            raise ValueError(f"{raw!r} is not a whole number")
        return int(round(number))
    return number


def set_path(data: dict[str, Any], path: str, value: Scalar) -> dict[str, Any]:
    """A copy of the (train) mapping `data` with `path` set to `value`; a missing parent mapping is created."""
    out = dict(data)
    head, _, rest = path.partition(".")
    if not rest:
        out[head] = value
        return out
    child = out.get(head)
    out[head] = set_path(child if isinstance(child, dict) else {}, rest, value)
    return out


def get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------------------------
# checking a sweep against the job it sweeps
# ---------------------------------------------------------------------------------------------------------------

FIXED_OPTIONS = ("task", "model", "base_model", "data.train", "data.eval")
"""Train options a sweep cannot vary: what a job uploads and loads once for all trials (inputs, the model)."""


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> Any:
    from pydantic_core import InitErrorDetails, PydanticCustomError

    return InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": message}),
                            loc=loc, input=value)


def check_sweep(sweep: SweepSpec, train: Any | None, command: str | None) -> SweepSpec:
    """The sweep with every name made canonical (`learning_rate` -> `hyperparameters.learning_rate`), `auto` resolved
    and each choice's values in the option's own type (`"1e-5"`, which YAML 1.1 reads as text, is the number 1e-05
    for a float option), after checking it against the job: each path names a plain option of `train` (a TrainSpec);
    each range is of a kind the option's type takes (`_type_problem`: no real range on an int option, no numeric range
    on a bool or text option); each range's ends and every choice validate there (they are applied to the train spec
    one at a time); a grid has no more combinations than max_trials; the objective is a metric the recipe reports,
    with the eval set it needs. A command job's names are plain identifiers.

    Raises pydantic's ValidationError located under the sweep (`parameters.<name>`, `max_trials`,
    `objective.metric`), so the spec loader names the field and its YAML line."""
    errors: list[Any] = []
    resolved: dict[str, Union[Literal["auto"], ParameterRange]] = {}
    for name, rng in sweep.parameters.items():
        loc = ("parameters", name)
        if command is not None:
            problem = _command_parameter(name, rng)
            if problem:
                errors.append(_error(loc, problem, name))
            resolved[name] = _numbers_from_text(rng) if isinstance(rng, ParameterRange) else rng
            continue
        path = full_path(name)
        if path in resolved:
            errors.append(_error(loc, f"names the same option as another parameter ({path})\nTo fix: keep one", name))
            continue
        rng, problem = _train_parameter(train, path, rng)
        if problem:
            errors.append(_error(loc, problem, name))
        resolved[path] = rng
    if not errors:
        errors += _grid_errors(sweep, resolved, command is not None)
    if train is not None:
        problem = _objective_problem(sweep.objective.metric, train)
        if problem:
            errors.append(_error(("objective", "metric"), problem, sweep.objective.metric))
    if errors:
        raise ValidationError.from_exception_data("SweepSpec", errors)
    return sweep.model_copy(update={"parameters": resolved})


def _train_parameter(train: Any, path: str, rng: Union[Literal["auto"], ParameterRange]) -> tuple[Any, str | None]:
    """`rng` for the train option `path` (canonical), with `auto` resolved and a choice's values in the option's type;
    and the first problem found (unknown option, a range the option's type cannot take, a value it refuses), or None."""
    problem = _option_problem(train, path)
    if problem is None and rng == "auto":
        rng, problem = _auto_range(train, path)
    if problem is not None:
        return rng, problem
    assert isinstance(rng, ParameterRange)
    annotation = _option_field(train, path).annotation
    problem = _type_problem(path, rng, annotation)
    if problem is None and rng.choice is not None:
        rng, problem = _typed_choice(rng, annotation)
    if problem is None:
        problem = _values_problem(train, path, rng)
    return rng, problem


def _grid_errors(sweep: SweepSpec, ranges: dict[str, Any], command: bool) -> list[Any]:
    """A grid runs every combination: refused when an `auto` range has no grid (SweepSpec refuses the real ranges it
    is given), or when there are more combinations than `max_trials` (which one service would refuse and the others
    cut short)."""
    if sweep.algorithm != "grid":
        return []
    errors = []
    for path, rng in ranges.items():
        if isinstance(rng, ParameterRange) and rng.kind not in ("choice", "int"):
            name = _given_name(sweep, path, command)
            errors.append(_error(("parameters", name), f"grid search takes choice or int ranges only, and {name}: auto "
                                 f"is the {rng.kind} range {list(rng.bounds or ())}\nTo fix: give it as {{choice: [...]}}, "
                                 "or use algorithm: bayesian or random", name))
    if errors:
        return errors
    size = math.prod(len(rng.grid()) for rng in ranges.values() if isinstance(rng, ParameterRange))
    if size <= sweep.max_trials:
        return []
    return [_error(("max_trials",), f"the grid has {size} combinations and max_trials is {sweep.max_trials}; a grid "
                   f"search runs every combination\nTo fix: raise max_trials to {size}, give fewer values, or use "
                   "algorithm: random", sweep.max_trials)]


def _given_name(sweep: SweepSpec, path: str, command: bool) -> str:
    """The name the spec gave the parameter now named `path` (`learning_rate` for `hyperparameters.learning_rate`)."""
    return next((name for name in sweep.parameters if full_path(name, command=command) == path), path)


def _command_parameter(name: str, rng: Any) -> str | None:
    if not COMMAND_NAME.match(name):
        return (f"a command job reads each value as --{name}=VALUE and {env_name(name)}\nTo fix: name it with letters, "
                f"digits and '_' only (e.g. {safe_name(name)})")
    if rng == "auto":
        return ("auto ranges are known for train options only\nTo fix: give the range your command takes, e.g. "
                "{loguniform: [1e-5, 1e-3]}")
    return None


def _option_problem(train: Any, path: str) -> str | None:
    """Why `path` is not a plain option of the TrainSpec `train`, or None."""
    if path in FIXED_OPTIONS or path.startswith("health."):
        return (f"train.{path} cannot vary between trials (the job's inputs, model and checks are set up once for all "
                "of them)\nTo fix: sweep a hyperparameter, a lora option or a data option instead")
    node, walked = train, "train"
    parts = path.split(".")
    for part in parts[:-1]:
        fields = type(node).model_fields
        if part not in fields:
            return f"{walked} has no option {part!r}\nTo fix: {_options_hint(node)}"
        child = getattr(node, part)
        walked += f".{part}"
        if child is None:
            return f"{walked} is not set, so {walked}.{parts[-1]} does nothing\nTo fix: add `{part}: {{}}` under train (e.g. lora: {{}} for LoRA)"
        if not isinstance(child, BaseModel):
            return f"{walked} is a plain option, not a section\nTo fix: name it as {path.rsplit('.', 1)[0]}"
        node = child
    last = parts[-1]
    if last not in type(node).model_fields:
        import difflib

        close = difflib.get_close_matches(last, list(type(node).model_fields), n=1)
        hint = f"did you mean {close[0]}?" if close else _options_hint(node)
        where = f"{walked}" if walked != "train" else "train.hyperparameters" if "." not in path else walked
        return f"{where} has no option {last!r}\nTo fix: {hint}"
    if isinstance(getattr(node, last), BaseModel):
        return f"{walked}.{last} is a section\nTo fix: name one of its options, e.g. {path}.{next(iter(type(getattr(node, last)).model_fields))}"
    return None


def _options_hint(node: Any) -> str:
    return "its options are " + ", ".join(type(node).model_fields)


def _auto_range(train: Any, path: str) -> tuple[Any, str | None]:
    if path == f"{HYPERPARAMETERS}.learning_rate":
        low, high = LORA_LEARNING_RATE if getattr(train, "lora", None) is not None else FULL_LEARNING_RATE
        return ParameterRange(loguniform=(low, high)), None
    if path in AUTO_RANGES:
        return ParameterRange.model_validate(AUTO_RANGES[path]), None
    known = ", ".join(["learning_rate", *AUTO_RANGES])
    return "auto", f"no default range for {path}\nTo fix: give one, e.g. {{uniform: [0.0, 0.1]}} (auto is known for {known})"


def _option_field(train: Any, path: str) -> Any:
    """The pydantic FieldInfo of the option `path` of the TrainSpec `train` (a path `_option_problem` accepted)."""
    node = train
    *parents, last = path.split(".")
    for part in parents:
        node = getattr(node, part)
    return type(node).model_fields[last]


def _kinds(annotation: Any) -> tuple[set[str], list[Any]]:
    """What an option's type annotation takes: the set of its free types among `int`, `float`, `bool`, `str` and
    `other` (lists, models), and the values of its Literals (None is left out: a sweep value is never null)."""
    kinds: set[str] = set()
    literals: list[Any] = []
    stack = [annotation]
    while stack:
        tp = stack.pop()
        origin = get_origin(tp)
        if origin is Literal:
            literals += get_args(tp)
        elif origin in (Union, types.UnionType):
            stack += get_args(tp)
        elif origin is Annotated:
            stack.append(get_args(tp)[0])
        elif tp is not type(None):
            kinds.add(tp.__name__ if tp in (bool, int, float, str) else "other")
    return kinds, literals


def _type_words(kinds: set[str], literals: list[Any]) -> str:
    """How an option's type is named in a message: `whole numbers (int)`, `true or false (bool)`, ..."""
    for kind, words in (("float", "numbers (float)"), ("int", "whole numbers (int)"), ("bool", "true or false (bool)"),
                        ("str", "text (str)")):
        if kind in kinds:
            return words
    if literals:
        return "one of " + ", ".join(format_value(v) for v in literals)
    return "values that no range draws"


def _type_problem(path: str, rng: ParameterRange, annotation: Any) -> str | None:
    """Why a range of `rng`'s kind cannot give values of the option's type (`annotation`), with the form it takes, or
    None: a real range on an int option draws fractions (pydantic would take only its whole ends); a numeric range
    on a bool or text option, or a boolean choice on a numeric one, gives values its trials would misread (pydantic
    takes 0/1 as booleans and booleans as 0/1). An int range on a float option is fine: whole numbers are floats."""
    kinds, literals = _kinds(annotation)
    what = f"train.{path} takes {_type_words(kinds, literals)}"
    numeric = kinds & {"int", "float"}
    if rng.choice is not None:
        for value in rng.choice:
            if isinstance(value, bool) and "bool" not in kinds:
                return f"{what}, and the choice {format_value(value)} is a boolean\nTo fix: {_choice_fix(kinds, literals)}"
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "bool" in kinds and not numeric:
                return f"{what}, and the choice {value!r} is a number\nTo fix: use {{choice: [true, false]}}"
        return None
    if "float" in kinds or ("int" in kinds and rng.int is not None):
        return None
    if "int" in kinds:
        return f"{what}, and a {rng.kind} range draws fractional values\nTo fix: use {_int_range(rng)}"
    return f"{what}, and a{'n' if rng.kind == 'int' else ''} {rng.kind} range draws numbers\nTo fix: {_choice_fix(kinds, literals)}"


def _choice_fix(kinds: set[str], literals: list[Any]) -> str:
    """The form a choice for an option of these kinds takes."""
    if literals:
        return "use {choice: [" + ", ".join(format_value(v) for v in literals[:3]) + "]} (values it takes)"
    if "bool" in kinds and not kinds & {"int", "float"}:
        return "use {choice: [true, false]}"
    if kinds & {"int", "float"}:
        return "give numbers, e.g. {choice: [8, 16]}"
    return "use {choice: [...]} with the texts to try"


def _int_range(rng: ParameterRange) -> str:
    """The int range nearest to a real range `rng` (its whole numbers inside; `log: true` for a loguniform one)."""
    low, high = rng.bounds  # type: ignore[misc]
    first, last = math.ceil(low), math.floor(high)
    if first >= last:
        first, last = math.floor(low), math.ceil(high)
    if rng.log_scale:
        first = max(first, 1)
    return f"{{int: [{first}, {last}]" + (", log: true}" if rng.log_scale else "}")


def _typed_choice(rng: ParameterRange, annotation: Any) -> tuple[ParameterRange, str | None]:
    """`rng` (a choice) with its values in a numeric option's type, as the option itself would take them: text that
    is a number (`1e-5`: YAML 1.1 reads a number without a dot as text; `"8"`) becomes the number, and a whole
    float on an int option (`8.0`) the int. A value the type refuses is kept for `_values_problem` to name. Two
    values that become the same number are refused."""
    kinds, _ = _kinds(annotation)
    if not kinds & {"int", "float"}:
        return rng, None
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    typed: list[Scalar] = []
    for value in rng.choice or ():
        if isinstance(value, str) or (isinstance(value, float) and "float" not in kinds):
            try:
                converted = adapter.validate_python(value)
            except ValidationError:
                converted = value
            if isinstance(converted, (int, float)) and not isinstance(converted, bool):
                value = converted
        typed.append(value)
    if len({repr(v) for v in typed}) != len(typed):
        return rng, (f"choice lists a value twice ({', '.join(format_value(v) for v in typed)} as numbers)\n"
                     "To fix: give each value once")
    changed = any(type(a) is not type(b) for a, b in zip(typed, rng.choice or ()))
    return (ParameterRange(choice=typed) if changed else rng), None


_YAML11_TEXT_NUMBER = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
"""A number with an exponent that YAML 1.1 reads as text (it wants a dot and a signed exponent: 1.0e-5, not 1e-5)."""


def _numbers_from_text(rng: ParameterRange) -> ParameterRange:
    """A command job's choice with its YAML 1.1 text numbers (`1e-5`) as numbers, as a train option's would be: the
    command has no declared type, and a number written so is meant as one (a tuning service then searches it as a
    number). Other text is kept as written."""
    if rng.choice is None or not any(isinstance(v, str) and _YAML11_TEXT_NUMBER.match(v) for v in rng.choice):
        return rng
    typed = [float(v) if isinstance(v, str) and _YAML11_TEXT_NUMBER.match(v) else v for v in rng.choice]
    return ParameterRange(choice=typed)


def _values_problem(train: Any, path: str, rng: ParameterRange) -> str | None:
    """Apply each sample value of `rng` at `path` to `train` and re-validate it; the first refusal, as text."""
    data = train.model_dump(mode="json")
    for value in rng.samples():
        try:
            type(train).model_validate(set_path(data, path, value))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            msg, _, fix = str(err["msg"]).removeprefix("Value error, ").partition("\nTo fix: ")
            return (f"the value {value!r} does not fit train.{path}: {msg}\nTo fix: "
                    f"{fix or 'narrow the range to values the option takes'}")
    return None


def _objective_problem(metric: str, train: Any) -> str | None:
    task = getattr(train, "task", "causal-lm")
    reported = METRICS.get(task, ())
    if not reported:  # text-to-image: its validation reports to the status file, not to the metric reporter
        return (f"task {task} cannot be swept yet: its recipe reports its validation loss (val_loss) to the job's "
                f"status and report only, not to the tuning services or the local sweep (the recipes of "
                f"{', '.join(sorted(METRICS))} do)\nTo fix: remove the sweep section and launch "
                f"one job per setting (e.g. --set train.hyperparameters.learning_rate=1e-4), then compare their "
                f"samples and val_loss in `cloudtune report`")
    if metric not in reported:
        return f"the {task} recipe does not report {metric!r}\nTo fix: use one of {', '.join(reported)}"
    if (metric.startswith("eval_") or metric == "perplexity") and train.data.eval is None:
        return (f"{metric} is measured on the eval set, and train.data.eval is not set\nTo fix: add an eval input and set "
                "train.data.eval, or use train_loss")
    return None


def trial_train(train: Any, values: dict[str, Scalar]) -> Any:
    """The TrainSpec `train` with each `values[path]` applied (paths as `check_sweep` made them canonical)."""
    data = train.model_dump(mode="json")
    for path, value in values.items():
        data = set_path(data, full_path(path), value)
    return type(train).model_validate(data)


def trial_spec(spec: Any, values: dict[str, Scalar]) -> Any:
    """The JobSpec of one trial: `spec` (a JobSpec with a sweep) with `values` (parameter name -> value) applied and no
    sweep, an ordinary job. A train job gets the values in its train section (so they are in the job config every rank
    reads); a command job gets them as `--name=value` arguments appended to its command and as
    `CLOUDTUNE_SWEEP_<NAME>` variables. Pure; raises pydantic's ValidationError for a value the option refuses."""
    import shlex

    if spec.train is not None:
        return spec.model_copy(update={"train": trial_train(spec.train, values), "sweep": None})
    arguments = " ".join(shlex.quote(a) for a in command_arguments(values))
    return spec.model_copy(update={"command": f"{spec.command} {arguments}".strip(),
                                   "env": {**spec.env, **command_env(values)}, "sweep": None})


def values_from_arguments(arguments: list[str], sweep: SweepSpec) -> dict[str, Scalar]:
    """The tuned values in `--name=value` arguments (as Vertex AI passes them; a name may be a safe_name), coerced
    to each range's type; arguments that name no parameter are left out."""
    ranges = sweep.ranges()
    found: dict[str, Scalar] = {}
    for arg in arguments:
        if not arg.startswith("--") or "=" not in arg:
            continue
        name, _, raw = arg[2:].partition("=")
        for candidate in (name, path_of_safe_name(name), full_path(name)):
            if candidate in ranges:
                found[candidate] = coerce(ranges[candidate], raw)
                break
    return found


def largest_values(sweep: SweepSpec) -> dict[str, Scalar]:
    """The values of the trial that needs the most memory, as far as values tell: the high end of every range and the
    largest number of every numeric choice (batch size, sequence length, LoRA rank grow memory; the others do not
    change it), the first of a choice of texts or booleans. The plan estimates this trial's memory and cost."""
    values: dict[str, Scalar] = {}
    for name, rng in sweep.ranges().items():
        if rng.choice is not None:
            numbers = [v for v in rng.choice if isinstance(v, (int, float)) and not isinstance(v, bool)]
            values[name] = max(numbers) if numbers else rng.choice[0]
        else:
            values[name] = rng.samples()[-1]
    return values


def largest_trial(spec: Any) -> Any:
    """`trial_spec(spec, largest_values(spec.sweep))`: the trial a sweep's plan estimates memory and cost for."""
    return trial_spec(spec, largest_values(spec.sweep))
