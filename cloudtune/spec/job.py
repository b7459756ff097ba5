"""The spec's root: `JobSpec` (one provider-neutral job) and its checkpoint policy. What counts as a remote URI and
as a secret reference are per-cloud facts, read from `cloudtune.contracts.clouds`."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cloudtune.contracts.clouds import SECRET_REF
from cloudtune.spec.base import Strict, check_name, shown
from cloudtune.spec.origin import SpecOrigin
from cloudtune.spec.resources import ProvidersSpec, Resources
from cloudtune.spec.sweep import SweepSpec, check_sweep
from cloudtune.spec.training import TrainSpec

MAX_INPUTS = 100
"""Most inputs per job (SageMaker takes 20 channels; each local input is resolved, checked and hashed)."""


class CheckpointSpec(Strict):
    every_steps: int = Field(50, ge=1, le=2**31 - 1, description="save a checkpoint every N optimizer steps")
    keep: int = Field(2, ge=1, le=1000, description="complete checkpoints kept on disk")


InputName = Annotated[str, AfterValidator(lambda v: check_name("input", v))]
EnvName = Annotated[str, AfterValidator(lambda v: check_name("environment variable", v))]
SecretName = Annotated[str, AfterValidator(lambda v: check_name("secret", v))]


class JobSpec(Strict):
    """A provider-neutral fine-tuning job."""

    name: str = Field(..., description="lowercase letters, digits and '-'; at most 40 characters")
    image: str | None = Field(None, description="container image URI; null = the provider's stock PyTorch image")
    resources: Resources = Field(default_factory=Resources)
    inputs: dict[InputName, str] = Field(default_factory=dict, description="name -> URI or local path")
    outputs: str | None = Field(None, description="base URI for model, checkpoints and logs")
    train: TrainSpec | None = None
    command: str | None = Field(None, description="command run in the bundled code dir instead of `train`")
    code: str = Field(".", description="source dir bundled with the job when `command` is used")
    include: list[str] = Field(default_factory=list, description="paths in the code dir bundled on purpose although "
                               "a secret rule or .gitignore leaves them out (as `code` is written)")
    env: dict[EnvName, str] = Field(default_factory=dict, description="plain, non-secret environment variables")
    secrets: dict[SecretName, str] = Field(default_factory=dict, description="NAME -> secret reference")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    retries: int = Field(0, ge=0, le=10, description="restarts after preemption or infrastructure failure")
    providers: ProvidersSpec = Field(default_factory=ProvidersSpec)
    sweep: SweepSpec | None = Field(None, exclude_if=lambda v: v is None,
                                    description="run the job as a hyperparameter sweep (see docs/sweeps.md)")
    _origin: SpecOrigin | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("job", v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and (not v or re.search(r"[\s\x00-\x1f\x7f]", v)):
            raise ValueError(f"image {shown(v)} is not an image URI (it is empty or holds a space or control character); "
                             "give e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1, or null")
        if v is not None and ("://" in v or re.match(r"[^/]*@", v)):  # a scheme, or user[:password]@ before the host
            raise ValueError("image is a URL or carries a user name (a password would travel in the job request); "
                             "give REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST) and sign the registry in with the "
                             "cloud's own credentials")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("command is empty; give the command to run in the code dir, e.g. python train.py")
        return v

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_INPUTS:
            raise ValueError(f"{len(v):,} inputs; a job takes at most {MAX_INPUTS}: put the files of one kind in one "
                             "directory (or under one URI prefix) and give that as one input")
        for key, uri in v.items():
            if not str(uri).strip():
                raise ValueError(f"input {key!r} is empty; give a URI (s3://, gs://, ...) or a local path")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        """Numbers and booleans become the text the job sees (true/false); names are checked by EnvName."""
        if not isinstance(v, dict):
            return v
        for key, val in v.items():
            if isinstance(val, (dict, list)) or val is None:
                raise ValueError(f"env.{shown(key)[1:-1] if isinstance(key, str) else key} must be a plain value "
                                 "(string, number or boolean)")
        return {k: (str(val).lower() if isinstance(val, bool) else str(val)) for k, val in v.items()}

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            if not SECRET_REF.match(str(ref)) or re.search(r"[\s\x00-\x1f\x7f]", ref):
                raise ValueError(
                    f"secret {key!r} must be a reference, not a value: an AWS Secrets Manager ARN, "
                    "a GCP secret version (projects/P/secrets/S/versions/V) or an Azure Key Vault secret URI, "
                    "with no space or control character"
                )
        return v

    @model_validator(mode="after")
    def _whole_spec(self) -> "JobSpec":
        """The checks that need the whole spec, in this order, each on the spec as the ones before left it: one of
        train and command (and `data.eval` defaulted, the data inputs named), then the train section as every rank
        and trial reads it (its JSON dump validates again), then the sweep against that final job."""
        self._one_of_train_command()
        self._train_round_trip()
        self._sweep_against_job()
        return self

    def _train_round_trip(self) -> None:
        """The train section's JSON dump validates as a TrainSpec: it is what `cloudtune-run`, every sweep trial and
        every re-loaded plan read. So a rule that the final values break (`eval_every` once `data.eval` defaulted to
        null, with no `eval` input) is refused here, at its field, not in the job. Raises pydantic's ValidationError
        located under `train`."""
        if self.train is None:
            return
        try:
            TrainSpec.model_validate(self.train.model_dump(mode="json"))
        except ValidationError as exc:
            eval_rule = self.train.data.eval is None and "eval" in str(exc.errors(include_url=False)[0]["msg"])
            raise _located(exc, ("train",), NO_EVAL_FIX if eval_rule else "") from None

    def _sweep_against_job(self) -> None:
        """Each swept option exists in the final `train` and takes the range's values, and the objective is one
        the job reports (cloudtune.spec.sweep.check_sweep); the sweep is kept with its names made canonical and
        `auto` resolved. Raises pydantic's ValidationError located under `sweep`."""
        if self.sweep is None:
            return
        try:
            self.sweep = check_sweep(self.sweep, self.train, self.command)
        except ValidationError as exc:
            raise _located(exc, ("sweep",)) from None

    def _one_of_train_command(self) -> None:
        """Exactly one of train and command; `data.eval` null when left out with no `eval` input; the data named
        are inputs (or Hub datasets); no name both in env and in secrets. Raises ValueError."""
        if (self.train is None) == (self.command is None):
            raise ValueError("give exactly one of `train` (the built-in recipe) and `command` (your own script)")
        if self.train is not None:
            data = self.train.data
            if "eval" not in data.model_fields_set and data.eval not in self.inputs:  # default, and no such input
                self.train = self.train.model_copy(update={"data": data.model_copy(update={"eval": None})})
            for role, name in (("train", self.train.data.train), ("eval", self.train.data.eval)):
                if name is not None and name.startswith("hf:"):
                    if not HUB_DATASET.match(name):
                        raise ValueError(f"train.data.{role} {name!r} is not a Hub dataset name: write hf:ORG/NAME "
                                         f"or hf:ORG/NAME:SPLIT (e.g. hf:trl-lib/Capybara:train)")
                    if self.train.task != "causal-lm":
                        raise ValueError(f"train.data.{role}: Hub datasets (hf:...) are read by the causal-lm recipe "
                                         f"only; download the data and name it as an input")
                elif name is not None and name not in self.inputs:
                    raise ValueError(
                        f"train.data.{role} names input {name!r}, which is not in `inputs`; "
                        f"add it under inputs or set train.data.{role} to one of {_some(sorted(self.inputs))}"
                        + (" (or null)" if role == "eval" else "")
                    )
        for key in self.secrets:
            if key in self.env:
                raise ValueError(f"{key!r} is both in env and in secrets; keep it in secrets only")

    # ----- derived facts -----
    @property
    def origin(self) -> SpecOrigin:
        """Where this spec came from (file, lines, `--set` items), for checks made after loading; a spec built in
        code has no lines."""
        return self._origin or SpecOrigin()

    def with_origin(self, origin: SpecOrigin) -> "JobSpec":
        """A copy of this spec that remembers `origin` (copies made from it with `model_copy` keep it)."""
        copy = self.model_copy()
        copy._origin = origin
        return copy

    def processes_per_node(self, gpus_per_node: int | None = None) -> int:
        """Resolve `auto`: one process per GPU, 1 on CPU."""
        ppn = self.resources.processes_per_node
        if ppn != "auto":
            return int(ppn)
        accel = self.resources.accel
        return 1 if accel.is_cpu else (gpus_per_node or accel.count)


NO_EVAL_FIX = ("add the eval data as an input (e.g. inputs: {eval: data/eval.jsonl}; train.data.eval names the input "
               "`eval` by default), or remove the option that needs an eval set")
"""The fix of a train rule that needs an eval set, when `train.data.eval` is null (left out, with no `eval` input)."""


def _located(exc: ValidationError, prefix: tuple[str, ...], fix: str = "") -> ValidationError:
    """`exc`'s errors with their locations under `prefix` (a model validator's errors carry no field of their own),
    as pydantic reports them (messages, inputs and contexts kept), so the loader names each field and its line;
    `fix` is the "To fix:" of a message that has none."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        if fix and "\nTo fix: " not in message:
            message += f"\nTo fix: {fix}"
        kind = PydanticCustomError(err["type"], "{message}", {**(err.get("ctx") or {}), "message": message})
        details.append(InitErrorDetails(type=kind, loc=(*prefix, *err["loc"]), input=err.get("input")))
    return ValidationError.from_exception_data("JobSpec", details)


def _some(names: list[str], limit: int = 10) -> str:
    """A list of names for a message: at most `limit`, then how many more."""
    if not names:
        return "[]"
    shown_names = ", ".join(shown(n) for n in names[:limit])
    return f"[{shown_names}" + (f", ... ({len(names) - limit} more)]" if len(names) > limit else "]")


# a Hub dataset named in train.data.train / eval (read in the job where it has network): hf:[ORG/]NAME[:SPLIT]
HUB_DATASET = re.compile(r"^hf:(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?::[A-Za-z0-9][\w.-]*)?$")
