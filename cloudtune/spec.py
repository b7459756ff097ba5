"""The job spec (v1): pydantic models, YAML loading with line-aware errors, overrides, JSON Schema.

Contract: `load_spec(path)` returns a validated, path-resolved `JobSpec` or raises `SpecError`, whose
issues each name the field path, the YAML line (when known) and how to fix it. Everything downstream
trusts a `JobSpec`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from cloudtune.errors import SpecError, SpecIssue
from cloudtune.units import parse_duration

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
REMOTE_SCHEMES = ("s3://", "gs://", "azureml://", "https://", "http://")
PROVIDERS = ("local", "aws", "gcp", "azure")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Accelerator(BaseModel):
    """A parsed `NAME[:COUNT]`; name "cpu" means no accelerator."""

    model_config = ConfigDict(frozen=True)
    name: str
    count: int

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"

    def __str__(self) -> str:
        return "cpu" if self.is_cpu else f"{self.name}:{self.count}"


def parse_accelerator(text: str) -> Accelerator:
    """Parse `NAME[:COUNT]` (e.g. `L4:1`, `H100:8`, `cpu`); the name is checked against the catalog later."""
    raw = str(text).strip()
    if raw.lower() == "cpu":
        return Accelerator(name="cpu", count=0)
    name, _, count = raw.partition(":")
    if not name:
        raise ValueError(f"accelerator {text!r} is empty; write NAME[:COUNT], e.g. L4:1, or cpu")
    if count == "":
        n = 1
    elif count.isdigit() and int(count) > 0:
        n = int(count)
    else:
        raise ValueError(f"accelerator count {count!r} must be a positive integer, e.g. {name}:1")
    return Accelerator(name=name, count=n)


class Resources(_Strict):
    accelerator: str = Field("cpu", description="NAME[:COUNT] per node from the catalog (e.g. L4:1, H100:8), or cpu")
    nodes: int = Field(1, ge=1, le=512, description="number of machines")
    processes_per_node: Union[Literal["auto"], int] = Field(
        "auto", description="training processes per node; auto = one per GPU, 1 on CPU"
    )
    spot: bool = Field(False, description="use spot / preemptible capacity")
    disk_gb: int = Field(100, ge=1, le=16384, description="local disk per node in GB")
    max_runtime: Union[str, int] = Field("24h", description="wall-clock limit: 90m, 2h, 1d or seconds")
    instance_type: dict[str, str] = Field(
        default_factory=dict, description="per-provider instance type override, e.g. {aws: ml.g5.2xlarge}"
    )

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        return str(parse_accelerator(v))

    @field_validator("processes_per_node")
    @classmethod
    def _ppn(cls, v: Union[str, int]) -> Union[str, int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("processes_per_node must be >= 1 or 'auto'")
        return v

    @field_validator("max_runtime")
    @classmethod
    def _runtime(cls, v: Union[str, int]) -> Union[str, int]:
        parse_duration(v)
        return v

    @field_validator("instance_type")
    @classmethod
    def _instance_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key not in PROVIDERS:
                raise ValueError(f"unknown provider {key!r} in instance_type; use one of {', '.join(PROVIDERS)}")
        return v

    @property
    def accel(self) -> Accelerator:
        return parse_accelerator(self.accelerator)

    @property
    def max_runtime_seconds(self) -> int:
        return parse_duration(self.max_runtime)


class _TrainPart(_Strict):
    """A train sub-model whose later-added options are left out of dumps while they hold their default.

    Runtime job configs (and golden plans) stay as they were for specs that do not use the new options, and the
    job JSON stays short (SageMaker caps each hyperparameter value at 2500 characters). The container
    re-validates the dump, so an omitted option gets the same default there.
    """

    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._OMIT_WHEN_DEFAULT:
                if name in data and getattr(self, name) == type(self).model_fields[name].default:
                    del data[name]
        return data


TASKS = ("causal-lm", "seq-classification")
DATA_FORMATS = ("auto", "text", "instruction", "chat")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DataSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = (
        "format", "prompt_field", "completion_field", "messages_field", "chat_template", "label_field", "labels", "packing",
    )
    train: str = Field("train", description="name of the input holding the training data")
    eval: str | None = Field(
        "eval", description="name of the input holding evaluation data; null = none; left out = 'eval' if that input exists"
    )
    format: Literal["auto", "text", "instruction", "chat"] = Field(
        "auto",
        description="causal-lm record shape: text (text_field), instruction (prompt_field + completion_field), "
        "chat (messages_field); auto = detected from the first record",
    )
    text_field: str = Field("text", description="record field holding the text (text format; seq-classification input)")
    prompt_field: str = Field("prompt", description="instruction format: field holding the prompt (no loss on it)")
    completion_field: str = Field("completion", description="instruction format: field holding the completion (the loss)")
    messages_field: str = Field("messages", description="chat format: field holding the list of {role, content} messages")
    chat_template: str | None = Field(
        None, description="chat format: Jinja chat template used when the tokenizer has none (or to replace its own)"
    )
    label_field: str = Field("label", description="seq-classification: field holding the label (a name or an integer id)")
    labels: list[str] | None = Field(
        None, description="seq-classification: the label names in id order; null = the sorted names found in the data"
    )
    packing: bool = Field(False, description="causal-lm: pack several examples per sequence (block-diagonal attention)")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) < 2:
                raise ValueError("labels needs at least two label names (or null to take them from the data)")
            dupes = sorted({x for x in v if v.count(x) > 1})
            if dupes:
                raise ValueError(f"labels lists {', '.join(map(repr, dupes))} more than once; each label name once")
        return v


class Hyperparameters(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("precision", "gradient_checkpointing", "eval_every", "early_stopping_patience")
    epochs: float = Field(1, gt=0, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="per-process batch size")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_seq_len: int = Field(128, ge=8)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(42)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory, slower)")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N optimizer steps during training; null = only before/after")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after N evaluations (eval_every) without a lower eval loss; null = off"
    )


class LoraSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("merge",)
    r: int = Field(16, ge=1, description="rank of the LoRA update matrices")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: Union[Literal["auto"], list[str]] = Field(
        "auto", description="module names to adapt; auto = the attention and MLP projections of known architectures"
    )
    merge: bool = Field(False, description="also merge the adapter into full weights in the model dir (adapter goes to adapter/)")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; list module names (e.g. [q_proj, v_proj]) or use auto")
        return v


class TrainSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("distributed",)
    task: Literal["causal-lm", "seq-classification"] = Field("causal-lm", description="built-in recipe")
    model: str = Field(..., description="hub id, local path, or the name of an input")
    data: DataSpec = Field(default_factory=DataSpec)
    lora: LoraSpec | None = Field(None, description="train a LoRA adapter instead of all weights; null = full fine-tune")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="how several processes train: ddp = every process holds the whole model (DistributedDataParallel); "
        "fsdp = parameters, gradients and optimizer state sharded across processes (FSDP full shard, one unit per "
        "decoder layer). One process trains unsharded either way",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSpec":
        data, hp = self.data, self.hyperparameters
        if self.task == "seq-classification":
            if data.packing:
                raise ValueError(
                    "train.data.packing applies to task causal-lm only (a classification example is one labelled "
                    "sequence); remove `packing: true` or set task: causal-lm"
                )
            if data.format != "auto":
                raise ValueError(
                    f"train.data.format {data.format!r} applies to task causal-lm only; seq-classification reads "
                    f"train.data.text_field and train.data.label_field: remove `format:`"
                )
            if data.chat_template is not None:
                raise ValueError("train.data.chat_template applies to task causal-lm (chat format) only; remove it")
        else:
            if data.labels is not None:
                raise ValueError("train.data.labels applies to task seq-classification only; remove it or set task: seq-classification")
            if data.format in ("text", "instruction") and data.chat_template is not None:
                raise ValueError(f"train.data.chat_template is used by the chat format only; remove it or set format: chat (now {data.format!r})")
        if self.distributed == "fsdp" and self.lora is not None and self.lora.merge:
            raise ValueError(
                "train.lora.merge needs the whole model in one process, which distributed: fsdp never holds: with fsdp "
                "the adapter is saved on its own; remove `merge: true` (merge it later with merge_and_unload), or "
                "use distributed: ddp"
            )
        if hp.eval_every is not None and data.eval is None:
            raise ValueError("hyperparameters.eval_every needs an eval set; set train.data.eval to an input, or remove eval_every")
        if hp.early_stopping_patience is not None:
            if data.eval is None:
                raise ValueError("hyperparameters.early_stopping_patience watches the eval loss, so it needs an eval set: set train.data.eval")
            if hp.eval_every is None:
                raise ValueError(
                    "hyperparameters.early_stopping_patience counts evaluations during training: set "
                    "hyperparameters.eval_every (e.g. 50) as well"
                )
        return self


class CheckpointSpec(_Strict):
    every_steps: int = Field(50, ge=1, description="save a checkpoint every N optimizer steps")
    keep: int = Field(2, ge=1, description="complete checkpoints kept on disk")


class LocalSettings(_Strict):
    emulate: Literal["aws", "gcp", "azure"] = Field("aws", description="which cloud's container contract to reproduce")
    jobs_dir: str | None = Field(None, description="where job directories go; default $CLOUDTUNE_HOME/jobs")


class AwsSettings(_Strict):
    region: str | None = None
    role: str | None = None
    bucket: str | None = None
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    kms_key: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    network_isolation: bool = False
    tensorboard: bool = False


class GcpSettings(_Strict):
    project: str | None = None
    region: str | None = None
    bucket: str | None = None
    service_account: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class AzureSettings(_Strict):
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    compute: str = "serverless"
    tags: dict[str, str] = Field(default_factory=dict)


class ProvidersSpec(_Strict):
    local: LocalSettings = Field(default_factory=LocalSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    gcp: GcpSettings = Field(default_factory=GcpSettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)


SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_REF = re.compile(r"^(arn:aws[a-z-]*:secretsmanager:|projects/[^/]+/secrets/[^/]+/versions/|https://[^/]+\.vault\.azure\.net/secrets/)")


class JobSpec(_Strict):
    """A provider-neutral fine-tuning job."""

    name: str = Field(..., description="lowercase letters, digits and '-'; at most 40 characters")
    image: str | None = Field(None, description="container image URI; null = the provider's stock PyTorch image")
    resources: Resources = Field(default_factory=Resources)
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> URI or local path")
    outputs: str | None = Field(None, description="base URI for model, checkpoints and logs")
    train: TrainSpec | None = None
    command: str | None = Field(None, description="command run in the bundled code dir instead of `train`")
    code: str = Field(".", description="source dir bundled with the job when `command` is used")
    env: dict[str, str] = Field(default_factory=dict, description="plain, non-secret environment variables")
    secrets: dict[str, str] = Field(default_factory=dict, description="NAME -> secret reference")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    retries: int = Field(0, ge=0, le=10, description="restarts after preemption or infrastructure failure")
    providers: ProvidersSpec = Field(default_factory=ProvidersSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(
                f"{v!r} is not a valid job name; use 1-40 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, e.g. my-job-1"
            )
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
        for key, uri in v.items():
            if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", key):
                raise ValueError(f"input name {key!r} must start with a letter and hold letters, digits, '_' or '-'")
            if not str(uri).strip():
                raise ValueError(f"input {key!r} is empty; give a URI (s3://, gs://, ...) or a local path")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for key, val in v.items():
            if not SECRET_NAME.match(str(key)):
                raise ValueError(f"environment variable name {key!r} is invalid; use letters, digits and '_'")
            if isinstance(val, (dict, list)) or val is None:
                raise ValueError(f"env.{key} must be a plain value (string, number or boolean)")
        return {str(k): (str(val).lower() if isinstance(val, bool) else str(val)) for k, val in v.items()}

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            if not SECRET_NAME.match(key):
                raise ValueError(f"secret name {key!r} is invalid; use letters, digits and '_'")
            if not SECRET_REF.match(str(ref)):
                raise ValueError(
                    f"secret {key!r} must be a reference, not a value: an AWS Secrets Manager ARN, "
                    "a GCP secret version (projects/P/secrets/S/versions/V) or an Azure Key Vault secret URI"
                )
        return v

    @model_validator(mode="after")
    def _one_of_train_command(self) -> "JobSpec":
        if (self.train is None) == (self.command is None):
            raise ValueError("give exactly one of `train` (the built-in recipe) and `command` (your own script)")
        if self.train is not None:
            data = self.train.data
            if "eval" not in data.model_fields_set and data.eval not in self.inputs:  # default, and no such input
                self.train = self.train.model_copy(update={"data": data.model_copy(update={"eval": None})})
            for role, name in (("train", self.train.data.train), ("eval", self.train.data.eval)):
                if name is not None and name not in self.inputs:
                    raise ValueError(
                        f"train.data.{role} names input {name!r}, which is not in `inputs`; "
                        f"add it under inputs or set train.data.{role} to one of {sorted(self.inputs) or '[]'}"
                        + (" (or null)" if role == "eval" else "")
                    )
        for key in self.secrets:
            if key in self.env:
                raise ValueError(f"{key!r} is both in env and in secrets; keep it in secrets only")
        return self

    # ----- derived facts -----
    def processes_per_node(self, gpus_per_node: int | None = None) -> int:
        """Resolve `auto`: one process per GPU, 1 on CPU."""
        ppn = self.resources.processes_per_node
        if ppn != "auto":
            return int(ppn)
        accel = self.resources.accel
        return 1 if accel.is_cpu else (gpus_per_node or accel.count)


def is_remote(uri: str) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line number (best effort)."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    walk(root, ())
    return lines


def _model_for_path(path: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = JobSpec
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _issues_from(error: ValidationError, lines: dict[tuple[str, ...], int],
                 overridden: dict[tuple[str, ...], str]) -> list[SpecIssue]:
    """One SpecIssue per pydantic error; a value set by `--set` is named as such instead of by a YAML line."""
    import difflib

    issues: list[SpecIssue] = []
    for err in error.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "literal[")))
        loc = tuple(p for p in loc if p not in ("int", "str", "float", "bool", "list[str]", "dict[str,str]"))
        kind = err["type"]
        secret = bool(loc) and loc[0] == "secrets"
        msg = str(err["msg"]).removeprefix("Value error, ")
        hint = ""
        if kind == "extra_forbidden":
            parent = _model_for_path(loc[:-1])
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
            msg = f"unknown key {loc[-1]!r}"
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(known)}" if known else "remove it")
        elif kind == "missing":
            msg = "this field is required"
            hint = f"add `{loc[-1]}:` to the spec"
        elif kind == "literal_error":
            hint = "use one of the listed values"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            got = "" if secret else f"got {err.get('input')!r}; "  # a secret's value is never echoed
            hint = got + _TYPE_HINTS.get(kind.split("_")[0], "give a value of the type named above")
        line = None
        override = _longest_prefix(loc, overridden)
        if override is not None:
            msg = f"{msg} (from --set {override.partition('=')[0] + '=...' if secret else override})"
        else:
            line = _longest_prefix(loc, lines)
        issues.append(SpecIssue(path=".".join(loc) or "<spec>", message=msg, line=line, hint=hint))
    return issues


def _longest_prefix(loc: tuple[str, ...], table: dict[tuple[str, ...], Any]) -> Any:
    """The value in `table` for the longest prefix of the field path `loc`, or None."""
    return next((table[loc[:cut]] for cut in range(len(loc), 0, -1) if loc[:cut] in table), None)


_TYPE_HINTS = {
    "int": "give a whole number, e.g. 2",
    "float": "give a number, e.g. 0.0005",
    "bool": "use true or false",
    "string": "give a text value (quote it in YAML)",
    "dict": "give a mapping of `key: value` entries",
    "list": "give a list, e.g. [a, b]",
}


def validate_spec(data: Any, *, source: str = "<spec>", text: str | None = None, base_dir: Path | None = None,
                  overrides: list[str] | None = None) -> JobSpec:
    """Validate a mapping as a JobSpec and resolve relative paths against `base_dir`.

    `overrides` are the `--set` items already applied to `data`; errors in their values name them."""
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("<spec>", "the spec must be a YAML mapping of keys to values", None, "start from `cloudtune init`")])
    lines = _line_index(text) if text else {}
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        overridden = {tuple(item.partition("=")[0].strip().split(".")): item for item in overrides or []}
        raise SpecError(source, _issues_from(exc, lines, overridden)) from None
    return resolve_paths(spec, base_dir or Path.cwd())


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override (`K=V` strings) and validate a job.yaml."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(str(path), [SpecIssue("<file>", f"no such file: {path}", None, "check the path, or create one with `cloudtune init`")])
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [SpecIssue("<file>", f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})",
                                              None, "save the file as UTF-8")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(str(path), [SpecIssue("<yaml>", f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None, "fix the indentation or quoting on that line")]) from None
    if data is None:
        data = {}
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides)
    return validate_spec(data, source=str(path), text=text, base_dir=p.resolve().parent, overrides=overrides)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a copy of `data`."""
    import yaml

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError("--set", [SpecIssue(item, "an override must look like KEY=VALUE", None, "e.g. --set resources.nodes=2")])
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..")


def resolve_paths(spec: JobSpec, base_dir: Path) -> JobSpec:
    """Return a copy with local input paths, a local model path and `code` made absolute."""
    def absolute(value: str) -> str:
        return str((base_dir / Path(value).expanduser()).resolve())

    inputs = {k: (v if is_remote(v) else absolute(v)) for k, v in spec.inputs.items()}
    update: dict[str, Any] = {"inputs": inputs, "code": absolute(spec.code)}
    if spec.train is not None:
        model = spec.train.model
        if model not in spec.inputs and not is_remote(model) and (_looks_local(model) or (base_dir / model).exists()):
            update["train"] = spec.train.model_copy(update={"model": absolute(model)})
    return spec.model_copy(update=update)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of job.yaml (for editors)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtune job spec v1"
    return schema
