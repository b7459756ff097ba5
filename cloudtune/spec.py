"""The job spec (v1): pydantic models, YAML loading with line-aware errors, overrides, JSON Schema.

Contract: `load_spec(path)` returns a validated, path-resolved `JobSpec` or raises `SpecError`, whose
issues each name the field path, the YAML line (when known) and how to fix it. Everything downstream
trusts a `JobSpec`.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator,
)

from cloudtune.errors import SpecError, SpecIssue
from cloudtune.units import parse_duration

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
REMOTE_SCHEMES = ("s3://", "gs://", "azureml://", "https://", "http://")

NAME_RULES: dict[str, tuple[str, str]] = {
    "job": (NAME_PATTERN.strip("^$"), "use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. my-job-1"),
    "input": (r"[A-Za-z][A-Za-z0-9_-]{0,63}", "use 1-64 letters, digits, '_' or '-', starting with a letter, e.g. train"),
    "environment variable": (r"[A-Za-z_][A-Za-z0-9_]{0,254}", "use letters, digits and '_' (at most 255), not starting with a digit, e.g. HF_HOME"),
    "secret": (r"[A-Za-z_][A-Za-z0-9_]{0,254}", "use letters, digits and '_' (at most 255), not starting with a digit, e.g. HF_TOKEN"),
}
MAX_ACCELERATORS_PER_NODE = 1024
MAX_INPUTS = 100
"""Most inputs per job (SageMaker takes 20 channels; each local input is resolved, checked and hashed)."""
MAX_PATH_BYTES = 4095
MAX_PATH_COMPONENT_BYTES = 255


def check_name(kind: str, value: Any) -> str:
    """The one name rule: `value` must be a string matching the whole of its kind's pattern (no trailing newline).

    Returns the name; raises ValueError naming the kind and what a valid name looks like."""
    pattern, usage = NAME_RULES[kind]
    if not isinstance(value, str) or not _compiled(pattern).fullmatch(value):
        raise ValueError(f"{shown(value)} is not a valid {kind} name; {usage}")
    return value


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error quotes it: repr, cut to about `limit` characters."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlong, short.maxlist, short.maxdict, short.maxlevel = limit, limit, limit, 4, 4, 2
    return short.repr(value)


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file on this machine (or a cloud's), or None: a NUL byte, a component over 255
    bytes, or over 4095 bytes in all (the Linux limits; ENAMETOOLONG otherwise)."""
    if "\x00" in path:
        return "holds a NUL byte"
    encoded = path.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_PATH_BYTES:
        return f"is {len(encoded):,} bytes long; a path may have at most {MAX_PATH_BYTES}"
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in path.split("/")), default=0)
    if longest > MAX_PATH_COMPONENT_BYTES:
        return f"has a {longest}-byte file or directory name; each may have at most {MAX_PATH_COMPONENT_BYTES} bytes"
    return None


class _Strict(BaseModel):
    """Unknown keys are errors; numbers are finite (`.inf` and `.nan` are refused)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


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
        raise ValueError(f"accelerator {shown(text)} is empty; write NAME[:COUNT], e.g. L4:1, or cpu")
    if count == "":
        n = 1
    elif re.fullmatch(r"[0-9]{1,6}", count) and 0 < int(count) <= MAX_ACCELERATORS_PER_NODE:
        n = int(count)
    else:
        raise ValueError(f"accelerator count {shown(count)} must be a positive integer up to {MAX_ACCELERATORS_PER_NODE}, "
                         f"e.g. {shown(name)[1:-1]}:1")
    return Accelerator(name=name, count=n)


class Resources(_Strict):
    accelerator: str = Field("cpu", description="NAME[:COUNT] per node from the catalog (e.g. L4:1, H100:8), or cpu")
    nodes: int = Field(1, ge=1, le=512, description="number of machines")
    processes_per_node: Union[Literal["auto"], int] = Field(
        "auto", description="training processes per node; auto = one per GPU, 1 on CPU (at most 1024)"
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
        """NAME[:COUNT] with NAME in the accelerator catalog (any spelling it accepts), or cpu."""
        accel = parse_accelerator(v)
        if not accel.is_cpu:
            from cloudtune.catalog import CatalogError, load_catalog

            try:
                load_catalog().normalize(accel.name)
            except CatalogError as exc:
                raise ValueError(f"{exc.message}; {exc.fix}") from None
        return str(accel)

    @field_validator("processes_per_node")
    @classmethod
    def _ppn(cls, v: Union[str, int]) -> Union[str, int]:
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError("processes_per_node must be from 1 to 1024, or 'auto'")
        return v

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _runtime(cls, v: Any) -> Union[str, int]:
        """A duration text or whole seconds, within parse_duration's range; a number of seconds becomes an int."""
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"max_runtime must be like 90m, 2h, 1d or a number of seconds, not {shown(v)}")
        seconds = parse_duration(v)
        return seconds if isinstance(v, float) else v

    @field_validator("instance_type")
    @classmethod
    def _instance_keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            return v
        from cloudtune.launcher import available_launchers

        known = sorted(available_launchers())
        for key in v:
            if key not in known:
                raise ValueError(f"unknown provider {key!r} in instance_type; use one of {', '.join(known)}")
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
                if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    del data[name]
        return data


TASKS = ("causal-lm", "seq-classification")
DATA_FORMATS = ("auto", "text", "instruction", "chat")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DataSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = (
        "format", "prompt_field", "completion_field", "messages_field", "chat_template", "label_field", "labels", "packing",
        "streaming",
    )
    train: str = Field("train", description="name of the input holding the training data, or a Hub dataset "
                       "hf:ORG/NAME[:SPLIT] (causal-lm; read in the job, which then needs network)")
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
    packing: bool = Field(False, description="causal-lm: pack several examples per row of at most max_seq_len tokens "
                          "(best-fit decreasing; greedy in order when streaming); position ids restart per example, "
                          "so no token attends across examples")
    streaming: bool = Field(False, description="causal-lm: read the training data as a stream (🤗 Datasets "
                            "IterableDataset: nothing converted or cached on disk), for data larger than the disk; "
                            "needs hyperparameters.max_steps; examples are read and packed in file order")

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
    epochs: float = Field(1, gt=0, le=100_000, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, le=2**31 - 1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(5e-4, gt=0, le=10)
    batch_size: int = Field(8, ge=1, le=1_000_000, description="per-process batch size")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1_000_000)
    max_seq_len: int = Field(128, ge=8, le=10_000_000)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=100)
    seed: int = Field(42, ge=0, le=2**32 - 1, description="random seed (0 .. 2**32-1, as numpy accepts)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU"
    )
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in the backward pass (less memory, about a third slower); null = on "
        "only when the memory estimate (cloudtune.memory) says the activations would not fit the GPU otherwise")
    eval_every: int | None = Field(None, ge=1, le=2**31 - 1, description="evaluate every N optimizer steps during training; null = only before/after")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=1_000_000, description="stop after N evaluations (eval_every) without a lower eval loss; null = off"
    )


class LoraSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("merge", "quantize")
    r: int = Field(16, ge=1, le=65_536, description="rank of the LoRA update matrices")
    alpha: int = Field(32, ge=1, le=1_000_000, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: Union[Literal["auto"], list[str]] = Field(
        "auto", description="module names to adapt; auto = the attention and MLP projections of known architectures"
    )
    merge: bool = Field(False, description="also merge the adapter into full weights in the model dir (adapter goes to adapter/)")
    quantize: Literal["4bit"] | None = Field(
        None, description="QLoRA: load the frozen base model in 4 bits (bitsandbytes NF4, double quantization, bf16 "
        "compute); CUDA GPUs only; null = the base model in the training precision")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; list module names (e.g. [q_proj, v_proj]) or use auto")
        return v


class HealthSpec(_TrainPart):
    """The training health checks (cloudtune.train.health): each on by default, each switchable."""

    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = (
        "divergence", "spike_window", "spike_factor", "spike_mads", "overfitting", "patience", "collapse", "prompts",
        "max_new_tokens", "max_repetition")

    divergence: bool = Field(
        True, description="stop the run (exit 66, class diverged: never retried) at the first step whose loss is NaN "
        "or infinite, or spikes far outside its recent range (see spike_window, spike_factor, spike_mads); the loss "
        "the Trainer computes is checked every optimizer step (every 10 steps on PyTorch/XLA), not only logged ones")
    spike_window: int = Field(
        50, ge=5, le=100_000, description="how many recent steps' losses the spike check compares with (it starts "
        "once 10 steps are in the window)")
    spike_factor: float = Field(
        3.0, gt=1, le=1e6, description="a spike is a loss above spike_factor x the window's median AND above the "
        "median + spike_mads x its median absolute deviation (both must hold)")
    spike_mads: float = Field(10.0, gt=0, le=1e6, description="see spike_factor")
    overfitting: bool = Field(
        True, description="warn (`[cloudtune] health: overfitting ...`) when the eval loss has stayed above its best "
        "for `patience` evaluations in a row while the train loss kept falling (needs eval_every)")
    patience: int = Field(3, ge=1, le=1_000_000, description="evaluations in a row that count as an overfitting trend")
    collapse: bool | None = Field(
        None, description="causal-lm: at each evaluation, generate greedily from the first `prompts` eval examples' "
        "prompts and warn when the outputs collapse into repetition compared with the base model's (measured once "
        "before training); null = on, except on PyTorch/XLA (TPU), where generation recompiles; true = on everywhere "
        "(fixed lengths: left-padded prompts, exactly max_new_tokens new tokens)")
    prompts: int = Field(4, ge=1, le=64, description="collapse: how many eval examples' prompts are generated from")
    max_new_tokens: int = Field(32, ge=8, le=1024, description="collapse: tokens generated per prompt")
    max_repetition: float = Field(
        0.5, gt=0, le=1, description="collapse: warn when the share of repeated 3-grams in the outputs reaches this "
        "and either is 0.2 above the base model's or distinct-2 across the outputs fell below half the base's (a base "
        "whose distinct-2 is under 0.2 has none to lose)")


class TrainSpec(_TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("distributed", "base_model", "memory_check", "health",
                                                     "keep_best", "report_to")
    task: Literal["causal-lm", "seq-classification"] = Field("causal-lm", description="built-in recipe")
    model: str = Field(..., description="hub id, local path, the name of an input, or job:<JOB> (the model of a "
                       "finished job, from the job store)")
    base_model: str | None = Field(
        None, description="when train.model is a LoRA adapter: the model it adapts (hub id, local path or the name "
        "of an input), loaded and merged with the adapter before training; set for you by train.model: job:<JOB>; "
        "null = the base named in the adapter's adapter_config.json")
    data: DataSpec = Field(default_factory=DataSpec)
    lora: LoraSpec | None = Field(None, description="train a LoRA adapter instead of all weights; null = full fine-tune")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="how several processes train: ddp = every process holds the whole model (DistributedDataParallel); "
        "fsdp = parameters, gradients and optimizer state sharded across processes (FSDP full shard, one unit per "
        "decoder layer). One process trains unsharded either way",
    )
    memory_check: bool = Field(
        True, description="refuse at plan time a job whose estimated memory per GPU (cloudtune.memory) is clearly "
        "beyond the accelerator's (over its memory + 20%); false = launch it anyway")
    health: HealthSpec = Field(
        default_factory=HealthSpec, description="training health checks: divergence (stops the run), overfitting and "
        "collapse (warnings); each on by default")
    keep_best: bool = Field(
        False, description="write the weights of the evaluation with the lowest eval loss as the model (its "
        "checkpoint is saved and never rotated away), not the last step's; needs eval_every")
    report_to: Union[Literal["auto", "none"], list[Literal["tensorboard", "mlflow", "wandb"]]] = Field(
        "auto", description="where training metrics go: auto = TensorBoard event files always, MLflow too when "
        "MLFLOW_TRACKING_URI is set; none; or a list of tensorboard, mlflow, wandb")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSpec":
        data, hp = self.data, self.hyperparameters
        if self.base_model is not None and self.base_model.startswith("job:"):
            raise ValueError("train.base_model takes a hub id, a local path or an input name; a job's model goes in "
                             "train.model (job:<JOB>), which brings the base of a LoRA adapter job by itself")
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
            if data.streaming:
                raise ValueError("train.data.streaming applies to task causal-lm only; remove `streaming: true`")
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
        if data.streaming and hp.max_steps is None:
            raise ValueError("train.data.streaming reads the data as a stream of unknown length, so the run needs a "
                             "step count: set hyperparameters.max_steps (epochs cannot be counted on a stream)")
        if self.lora is not None and self.lora.quantize is not None:
            self._check_quantize()
        if hp.eval_every is not None and data.eval is None:
            raise ValueError("hyperparameters.eval_every needs an eval set; set train.data.eval to an input, or remove eval_every")
        if self.keep_best and (data.eval is None or hp.eval_every is None):
            raise ValueError("train.keep_best keeps the checkpoint of the best evaluation during training: set "
                             "train.data.eval and hyperparameters.eval_every (e.g. 50), or remove keep_best")
        if hp.early_stopping_patience is not None:
            if data.eval is None:
                raise ValueError("hyperparameters.early_stopping_patience watches the eval loss, so it needs an eval set: set train.data.eval")
            if hp.eval_every is None:
                raise ValueError(
                    "hyperparameters.early_stopping_patience counts evaluations during training: set "
                    "hyperparameters.eval_every (e.g. 50) as well"
                )
        return self

    def _check_quantize(self) -> None:
        """`lora.quantize` with what cannot go with it (see cloudtune.train.loading for the reasons at run time)."""
        if self.lora is not None and self.lora.merge:
            raise ValueError(
                "train.lora.merge with lora.quantize: 4bit would merge the adapter into 4-bit weights: the sum is "
                "quantized again, which rounds away most of the adapter's update (it is smaller than an NF4 step), and "
                "the result is a bitsandbytes checkpoint, not plain weights; remove `merge: true` and merge later into "
                "the bf16 base (PeftModel.from_pretrained(base, adapter).merge_and_unload())")
        if self.distributed == "fsdp":
            raise ValueError(
                "train.lora.quantize: 4bit cannot be sharded by cloudtune's FSDP (FSDP2 does not shard bitsandbytes "
                "4-bit parameters); use distributed: ddp (each GPU holds the 4-bit model: about 0.55 bytes a "
                "parameter), or remove quantize and keep fsdp")


class CheckpointSpec(_Strict):
    every_steps: int = Field(50, ge=1, le=2**31 - 1, description="save a checkpoint every N optimizer steps")
    keep: int = Field(2, ge=1, le=1000, description="complete checkpoints kept on disk")


class LocalSettings(_Strict):
    emulate: Literal["aws", "gcp", "azure"] = Field("aws", description="which cloud's container contract to reproduce")
    jobs_dir: str | None = Field(None, description="where job directories go; default $CLOUDTUNE_HOME/jobs")
    runtime: Literal["host", "image"] = Field(
        "host", description="host: this machine's Python environment; image: the emulated cloud's stock-image Python, "
        "torch and wheel lock in a cached virtual environment, started through that cloud's own start path")
    wheel_locks: str | None = Field(None, description="runtime image: a directory of wheel locks (default: cloudtune's own)")


class ProvidersSpec(BaseModel):
    """Per-provider settings. `local` is the core's; every other provider's section is validated by the settings
    model its launcher declares (`Launcher.settings_model`), when that provider is used."""

    model_config = ConfigDict(extra="allow", validate_default=True)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @model_validator(mode="after")
    def _sections(self) -> "ProvidersSpec":
        if not self.__pydantic_extra__:
            return self
        from cloudtune.launcher import available_launchers

        known = sorted(available_launchers())
        for name, value in (self.__pydantic_extra__ or {}).items():
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, known, n=1)
                raise ValueError(f"unknown provider {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f"; providers: {', '.join(known)}")
            if not isinstance(value, dict):
                raise ValueError(f"providers.{name} must be a mapping of settings, e.g. {{region: ...}}")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """The settings given for provider `name` in the spec (only the keys the user wrote)."""
        if name == "local":
            return self.local.model_dump(include=self.local.model_fields_set)
        return dict((self.__pydantic_extra__ or {}).get(name) or {})


SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
InputName = Annotated[str, AfterValidator(lambda v: check_name("input", v))]
EnvName = Annotated[str, AfterValidator(lambda v: check_name("environment variable", v))]
SecretName = Annotated[str, AfterValidator(lambda v: check_name("secret", v))]
SECRET_REF = re.compile(r"^(arn:aws[a-z-]*:secretsmanager:|projects/[^/]+/secrets/[^/]+/versions/|https://[^/]+\.vault\.azure\.net/secrets/)")


class JobSpec(_Strict):
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
    def _one_of_train_command(self) -> "JobSpec":
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
        return self

    # ----- derived facts -----
    def processes_per_node(self, gpus_per_node: int | None = None) -> int:
        """Resolve `auto`: one process per GPU, 1 on CPU."""
        ppn = self.resources.processes_per_node
        if ppn != "auto":
            return int(ppn)
        accel = self.resources.accel
        return 1 if accel.is_cpu else (gpus_per_node or accel.count)


def _some(names: list[str], limit: int = 10) -> str:
    """A list of names for a message: at most `limit`, then how many more."""
    if not names:
        return "[]"
    shown_names = ", ".join(shown(n) for n in names[:limit])
    return f"[{shown_names}" + (f", ... ({len(names) - limit} more)]" if len(names) > limit else "]")


# a Hub dataset named in train.data.train / eval (read in the job where it has network): hf:[ORG/]NAME[:SPLIT]
HUB_DATASET = re.compile(r"^hf:(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?::[A-Za-z0-9][\w.-]*)?$")


class CodeJobSpec(JobSpec):
    """`cloudtune.JobSpec`: a JobSpec built in code (`cloudtune.JobSpec(name=..., command=...)`), whose mistakes are a
    SpecError (InvalidInput, exit 2 in the CLI) naming each field by its YAML path, with did-you-mean for an unknown
    key, as `cloudtune validate` reports a job.yaml; instances are JobSpecs. (A subclass: pydantic runs a model's
    own __init__ inside model_validate too, where the loader needs pydantic's error with its locations.)"""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError("JobSpec(...)", _issues_from(exc, {}, {})) from None


CodeJobSpec.__name__ = CodeJobSpec.__qualname__ = "JobSpec"


def is_remote(uri: str) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


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
    for err in error.errors(include_url=False)[:MAX_ISSUES]:
        loc = tuple(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "literal[")))
        loc = tuple(p for p in loc if p not in ("int", "str", "float", "bool", "list[str]", "dict[str,str]", "[key]"))
        kind = err["type"]
        secret = bool(loc) and loc[0] == "secrets"
        msg = str(err["msg"]).removeprefix("Value error, ")
        hint = ""
        if kind == "extra_forbidden":
            parent = _model_for_path(loc[:-1])
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(loc[-1][:100], known, n=1, cutoff=0.6)
            msg = f"unknown key {shown(loc[-1])}"
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(known)}" if known else "remove it")
        elif kind == "missing":
            msg = "this field is required"
            hint = f"add `{loc[-1]}:` to the spec"
        elif kind == "literal_error":
            hint = "use one of the listed values"
        elif kind == "finite_number":
            hint = "give a finite number (.inf and .nan are not numbers a job can use)"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            got = "" if secret else f"got {shown(err.get('input'))}; "  # a secret's value is never echoed
            hint = got + _TYPE_HINTS.get(kind.split("_")[0], "give a value of the type named above")
        line = None
        override = _longest_prefix(loc, overridden)
        if override is not None:
            msg = f"{msg} (from --set {override.partition('=')[0] + '=...' if secret else override})"
        else:
            line = _longest_prefix(loc, lines)
        issues.append(SpecIssue(path=field_path(loc), message=msg, line=line, hint=hint))
    if error.error_count() > MAX_ISSUES:
        issues.append(SpecIssue("<spec>", f"... and {error.error_count() - MAX_ISSUES} more problems not listed", None,
                                "fix the ones above, then validate again"))
    return issues


def field_path(loc: tuple[str, ...]) -> str:
    """A field path as errors print it: `a.b.c`, with a key holding a newline or other control character quoted."""
    return ".".join(part if part.isprintable() else shown(part) for part in loc) or "<spec>"


def _text_problem(text: str) -> str | None:
    """Why a string cannot travel to a job (process environment, JSON file, command line), or None."""
    if "\x00" in text:
        return "holds a NUL byte (\\0), which no environment variable, path or command can carry"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate escape (e.g. \\ud800), which is not text"
    return None


def _text_issues(data: Any, lines: dict[tuple[str, ...], int], overridden: dict[tuple[str, ...], str]) -> list[SpecIssue]:
    """Every key and string value in `data` that `_text_problem` refuses (bounded: MAX_ISSUES, nesting MAX_DEPTH)."""
    from cloudtune.spec_yaml import MAX_DEPTH

    issues: list[SpecIssue] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack and len(issues) < MAX_ISSUES:
        path, value = stack.pop()
        if id(value) in seen or len(path) > MAX_DEPTH:
            continue
        seen.add(id(value))
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        values = list(value.values()) if isinstance(value, dict) else value
        plain_values = _joined(values)  # None: not all text, so some may be containers
        if _text_problem(_joined(keys) or "") or plain_values is None or _text_problem(plain_values):
            for key, item in reversed(list(zip(keys, values))):
                child = (*path, str(key))
                for what, text in (("key", key), ("value", item)):
                    problem = _text_problem(text) if isinstance(text, str) else None
                    if problem:
                        issues.append(_issue_at(child, f"the {what} {problem}", "remove it", lines, overridden))
                if isinstance(item, (dict, list)):
                    stack.append((child, item))
    return issues


def _joined(items: list[Any]) -> str | None:
    """All of `items` joined, when they are all strings (one C-speed pass); else None."""
    try:
        return "".join(items)
    except TypeError:
        return None


def _issue_at(loc: tuple[str, ...], message: str, hint: str, lines: dict[tuple[str, ...], int],
              overridden: dict[tuple[str, ...], str]) -> SpecIssue:
    """An issue at field path `loc`, named by its YAML line, or by its `--set` flag when one set it."""
    override = _longest_prefix(loc, overridden)
    if override is not None:
        return SpecIssue(field_path(loc), f"{message} (from --set {override.partition('=')[0]}=...)", None, hint)
    return SpecIssue(field_path(loc), message, _longest_prefix(loc, lines), hint)


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


MAX_ISSUES = 50
"""At most this many problems are listed per spec; a count of the rest follows."""


def _overridden(overrides: list[str] | None) -> dict[tuple[str, ...], str]:
    return {tuple(item.partition("=")[0].strip().split(".")): item for item in overrides or []}


def validate_spec(data: Any, *, source: str = "<spec>", text: str | None = None, base_dir: Path | None = None,
                  overrides: list[str] | None = None, lines: dict[tuple[str, ...], int] | None = None,
                  known_issues: list[SpecIssue] | tuple[SpecIssue, ...] = ()) -> JobSpec:
    """Validate a mapping as a JobSpec, check and resolve its local paths against `base_dir`.

    `overrides` are the `--set` items already applied to `data`; errors in their values name them. `lines` maps key
    paths to YAML lines (else they are taken from `text`, when given). `known_issues` (found in the YAML itself) are
    reported together with the validation errors. Raises SpecError listing every problem found."""
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("<spec>", "the spec must be a YAML mapping of keys to values", None, "start from `cloudtune init`")])
    if lines is None:
        from cloudtune.spec_yaml import compose

        lines = compose(text, source)[1] if text else {}
    overridden = _overridden(overrides)
    issues = list(known_issues) + _text_issues(data, lines, overridden)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        reported = {i.path for i in issues}
        issues += [i for i in _issues_from(exc, lines, overridden) if i.path not in reported]
    except RecursionError:  # a mapping that contains itself, built in Python
        issues.append(SpecIssue("<spec>", "the spec contains itself (a cyclic reference)", None, "give plain nested values"))
    if issues:
        raise SpecError(source, issues)
    return resolve_paths(spec, base_dir or Path.cwd(), source=source, lines=lines)


def _read_text(path: Path, source: str) -> str:
    """The spec file's text, or SpecError: missing, not a file, unreadable, too large, not UTF-8."""
    from cloudtune.spec_yaml import MAX_BYTES

    def fail(message: str, hint: str) -> SpecError:
        return SpecError(source, [SpecIssue("<file>", message, None, hint)])

    try:
        if not path.exists():
            raise fail(f"no such file: {path}", "check the path, or create one with `cloudtune init`")
        if not path.is_file():
            raise fail(f"{path} is not a file", "give the path of a job.yaml")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise fail(f"the file is {size:,} bytes; a job spec may be at most {MAX_BYTES:,}",
                       "a job spec is small: keep data and long values in files it names")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})", "save the file as UTF-8") from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    except ValueError as exc:  # e.g. a NUL byte in the path given to the API
        raise fail(f"cannot read {shown(str(path))}: {exc}", "check the path") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override (`K=V` strings) and validate a job.yaml. The YAML is parsed once (see cloudtune.spec_yaml)."""
    from cloudtune.spec_yaml import ambiguous_numbers, gc_paused, inexact_env, load_yaml

    p = Path(path)
    source = str(path)
    text = _read_text(p, source)
    with gc_paused():
        loaded = load_yaml(text, source)
        data = {} if loaded.data is None else loaded.data
        issues = inexact_env(loaded.root) + ambiguous_numbers(loaded.root)
        if overrides and isinstance(data, dict):
            data = apply_overrides(data, overrides)
            overridden = _overridden(overrides)
            issues = [i for i in issues if _longest_prefix(tuple(i.path.split(".")), overridden) is None]
        return validate_spec(data, source=source, base_dir=p.resolve().parent, overrides=overrides,
                             lines=loaded.lines, known_issues=issues)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a copy of `data`. A value is parsed as YAML (text that is not YAML stays
    text) under the same limits as a job.yaml; an `env.NAME` value is taken exactly as written."""
    from cloudtune.spec_yaml import MAX_DEPTH

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not key.strip():
            raise SpecError("--set", [SpecIssue(item, "an override must look like KEY=VALUE", None, "e.g. --set resources.nodes=2")])
        if len(parts) > MAX_DEPTH:
            raise SpecError("--set", [SpecIssue(shown(key), f"the key nests deeper than {MAX_DEPTH} levels", None,
                                                "name a field of the spec, e.g. resources.nodes")])
        value = raw if parts[0] == "env" and len(parts) == 2 else _override_value(key.strip(), raw)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _override_value(key: str, raw: str) -> Any:
    """A `--set` value: YAML when it parses (within the limits), else the text itself."""
    from cloudtune.spec_yaml import YamlSyntaxError, ambiguous_numbers, load_yaml

    if raw == "":
        return ""
    source = f"--set {shown(key)[1:-1]}"
    try:
        loaded = load_yaml(raw, source)
    except YamlSyntaxError:
        return raw
    except SpecError as exc:  # a limit passed: name the key the value was given for
        raise SpecError("--set", [SpecIssue(key, i.message, None, i.hint) for i in exc.issues]) from None
    issues = ambiguous_numbers(loaded.root, skip=())
    if issues:
        raise SpecError(source, [SpecIssue(key, issues[0].message, None, issues[0].hint)])
    return loaded.data


def _looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..")


PATH_HINT = "give a path the file system accepts: no NUL byte, each name at most 255 bytes, at most 4095 bytes in all"


def resolve_paths(spec: JobSpec, base_dir: Path, *, source: str = "<spec>",
                  lines: dict[tuple[str, ...], int] | None = None) -> JobSpec:
    """Return a copy with local input paths, a local model path and `code` made absolute.

    Every local path (and `providers.local.jobs_dir`) is checked as given and once resolved, so that validation,
    the dry run and the job agree: SpecError names each path the file system would refuse (see `path_problem`)."""
    issues: list[SpecIssue] = []

    def absolute(loc: tuple[str, ...], value: str, data: bool = True) -> str:
        problem = path_problem(value)
        resolved, hint = value, PATH_HINT
        if problem is None:
            try:
                resolved = str((base_dir / Path(value).expanduser()).resolve())
            except (RuntimeError, OSError, ValueError) as exc:  # ~nosuchuser, a symlink loop
                issues.append(SpecIssue(field_path(loc), f"the path {shown(value)} cannot be resolved ({exc})",
                                        _longest_prefix(loc, lines or {}), "check the path: a ~user must name a user of "
                                        "this machine, and no symbolic link may point back at itself"))
                return value
            else:
                later = path_problem(resolved)
                problem = f"resolves to a path that {later}" if later else None
                if problem is None and data and _system_path(resolved):
                    problem = f"resolves to {shown(resolved)}, which {_system_path(resolved)}"
                    hint = "point at a file or directory that holds the data (copy it there first)"
        if problem:
            issues.append(SpecIssue(field_path(loc), f"the path {shown(value)} {problem}",
                                    _longest_prefix(loc, lines or {}), hint))
        return resolved

    inputs = {k: (v if is_remote(v) else absolute(("inputs", k), v)) for k, v in spec.inputs.items()}
    update: dict[str, Any] = {"inputs": inputs, "code": absolute(("code",), spec.code, data=False)}
    if spec.include:
        update["include"] = [absolute(("include", str(i)), v, data=False) for i, v in enumerate(spec.include)]
    if spec.train is not None:
        paths: dict[str, Any] = {}
        for key in ("model", "base_model"):
            model = getattr(spec.train, key)
            if model is None or model.startswith("job:"):
                continue
            if model not in spec.inputs and not is_remote(model) and (_looks_local(model) or _exists(base_dir, model)):
                paths[key] = absolute(("train", key), model)
        if paths:
            update["train"] = spec.train.model_copy(update=paths)
        issues += _job_model_issues(spec.train.model, lines or {})
    jobs_dir = spec.providers.local.jobs_dir
    if jobs_dir is not None:  # relative to the spec's directory, as every other path in it
        local = spec.providers.local.model_copy(update={"jobs_dir": absolute(("providers", "local", "jobs_dir"), jobs_dir)})
        update["providers"] = spec.providers.model_copy(update={"local": local})
    if issues:
        raise SpecError(source, issues)
    return spec.model_copy(update=update)


def _job_model_issues(model: str, lines: dict[tuple[str, ...], int]) -> list[SpecIssue]:
    """A `train.model: job:<JOB>` that the job store cannot resolve to a finished model, as one issue at its line
    (the store is read, never written; see `cloudtune.jobmodel`)."""
    from cloudtune.jobmodel import JobModelError, is_job_ref, lookup

    if not is_job_ref(model):
        return []
    try:
        lookup(model)
    except JobModelError as exc:
        return [SpecIssue("train.model", f"{shown(model)}: {exc.message}", _longest_prefix(("train", "model"), lines),
                          exc.fix or "")]
    return []


SYSTEM_DIRS = ("/proc", "/sys", "/dev")
"""Virtual file systems: their files are not data (reading some blocks or fails, /proc/self/root is the whole disk)."""


def _system_path(resolved: str) -> str | None:
    """Why a resolved local path cannot hold a job's data or files, or None: the root, or a virtual file system."""
    if resolved == "/":
        return "is the root of the file system"
    top = next((d for d in SYSTEM_DIRS if resolved == d or resolved.startswith(d + "/")), None)
    if top is not None and not resolved.startswith("/dev/shm"):
        return f"is in {top}, a virtual file system, not data"
    return None


def _exists(base_dir: Path, name: str) -> bool:
    """Whether `name` is an existing path under `base_dir` (a name the file system refuses is not one)."""
    if path_problem(name) or path_problem(str(base_dir / name)):
        return False
    try:
        return (base_dir / name).exists()
    except (OSError, ValueError):
        return False


def check_offline(spec: JobSpec) -> list[str]:
    """Run the checks a dry run makes that need no provider, so that `cloudtune validate` and the dry run agree:
    local inputs exist and a local `train.model` is a saved model (cloudtune.jobconfig.check_local_inputs), and a
    command job's code dir bundles. (The accelerator name is checked against the catalog with the spec itself.)

    Returns the warnings that do not stop a job; raises a CloudtuneError (exit 2) naming what is wrong. `spec` has
    been through `resolve_paths`."""
    from cloudtune.jobconfig import check_local_inputs, with_model_input

    shaped = with_model_input(spec)  # a local model travels as an input: checked and scanned like the data
    notes = list(check_local_inputs(shaped) or [])
    if spec.resources.accelerator != "cpu":
        from cloudtune.catalog import load_catalog

        meaning = load_catalog().meaning_note(spec.resources.accelerator)  # `A100:8`: which part it means
        notes += [meaning] if meaning else []
    if spec.command is not None:
        from cloudtune.bundle import build_bundle, left_out_note

        note = left_out_note(build_bundle(Path(spec.code), include=spec.include))
        notes += [note] if note else []
    from cloudtune.secretfiles import secret_notes

    return notes + secret_notes(spec.env, shaped.inputs)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of job.yaml (for editors)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtune job spec v1"
    for field_name, kind in (("inputs", "input"), ("env", "environment variable"), ("secrets", "secret")):
        # (?!\n): Python's $ also matches before a final newline; ECMA-262's does not; both read this the same
        schema["properties"][field_name]["propertyNames"] = {"pattern": "^" + NAME_RULES[kind][0] + r"(?!\n)$"}
    return schema
