"""`train`: the built-in recipe's options (model, hyperparameters, LoRA, health checks) and their consistency."""

from __future__ import annotations

from typing import ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from cloudtune.spec.base import TrainPart
from cloudtune.spec.data import DataSpec, unread_data_option
from cloudtune.spec.audio import AudioSpec
from cloudtune.spec.image import ValidationSpec, check_image_task
from cloudtune.spec.preference import (
    ATTN_IMPLEMENTATIONS, LR_SCHEDULERS, OPTIMIZERS, PreferenceSpec, PushToHubSpec, check_preference_task,
)

TASKS = ("causal-lm", "seq-classification", "text-to-image", "preference", "text-to-audio")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class Hyperparameters(TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("precision", "gradient_checkpointing", "eval_every", "early_stopping_patience",
                                                     "resolution", "snr_gamma", "noise_offset", "optimizer",
                                                     "cache_latents", "lr_scheduler", "warmup_steps", "max_grad_norm")
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
    resolution: int | None = Field(
        None, ge=8, le=8192, description="text-to-image: the training side in pixels (a multiple of 8; with "
        "bucketing, the buckets hold about resolution^2 pixels); null = 512 (SD 1.x; use 768 for SD 2.x, 1024 for SDXL)")
    snr_gamma: float | None = Field(
        None, gt=0, le=1000, description="text-to-image: min-SNR loss weighting (Hang et al. 2023), gamma 5.0 as they "
        "recommend; null = plain MSE")
    noise_offset: float = Field(0.0, ge=0, le=1, description="text-to-image: offset noise (per-channel constant added "
                                "to the noise), e.g. 0.05-0.1 for darker/brighter images; 0 = off")
    optimizer: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "adamw", description="the optimizer: adamw (torch's AdamW; TrainingArguments' adamw_torch), adamw_torch_fused, "
        "adafactor; on CUDA GPUs also bitsandbytes' adamw_8bit (also written adamw_bnb_8bit), paged_adamw_8bit, "
        "paged_adamw_32bit (TrainingArguments `optim` names). text-to-image takes adamw and adamw_8bit")
    lr_scheduler: Literal[LR_SCHEDULERS] = Field(  # type: ignore[valid-type]
        "linear", description="the learning-rate schedule after warmup (TrainingArguments `lr_scheduler_type`)")
    warmup_steps: int | None = Field(
        None, ge=0, le=2**31 - 1, description="optimizer steps of linear warmup; null = warmup_ratio of the steps")
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, description="clip the gradient norm to this; 0 = no clipping")

    @model_validator(mode="after")
    def _warmup(self) -> "Hyperparameters":
        """One warmup option, and a warmup that ends before the run does (else the learning rate never reaches
        learning_rate). Without max_steps the run's length is known in the job only, which warns there
        (cloudtune.train.knobs.warmup_warning)."""
        if self.warmup_steps is not None and self.warmup_ratio:
            raise ValueError("give one of hyperparameters.warmup_steps and warmup_ratio; remove the other")
        if self.warmup_steps is not None and self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise ValueError(f"hyperparameters.warmup_steps ({self.warmup_steps}) is not below max_steps "
                             f"({self.max_steps}): the whole run would be warmup, so the learning rate would never "
                             f"reach learning_rate\nTo fix: lower warmup_steps below max_steps (a tenth of the run is usual: "
                             f"{self.max_steps // 10} here), or raise max_steps")
        if self.warmup_ratio >= 1:
            raise ValueError(f"hyperparameters.warmup_ratio {self.warmup_ratio} makes the whole run warmup, so the "
                             f"learning rate would never reach learning_rate\nTo fix: give a share below 1, e.g. 0.03")
        return self
    cache_latents: bool | None = Field(
        None, description="text-to-image: encode the images (VAE latent distributions) and captions (text embeddings) "
        "once per node and train from the cache, kept in the checkpoint dir and reused on resume; exact (the latents "
        "are drawn from the cached distribution in each step); random crops turn the latent part off and a LoRA on "
        "the text encoders the embedding part (said in the log); null = on where exact; false = off")


class LoraSpec(TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("merge", "quantize", "text_encoders")
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
    text_encoders: bool = Field(False, description="text-to-image: a LoRA on the text encoders' attention too (same "
                                "r and alpha); false = the denoiser only")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; list module names (e.g. [q_proj, v_proj]) or use auto")
        return v


class HealthSpec(TrainPart):
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


class TrainSpec(TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("distributed", "base_model", "memory_check", "health",
                                                     "keep_best", "report_to", "validation", "preference", "push_to_hub",
                                                     "attn_implementation", "revision", "trust_remote_code",
                                                     "audio")
    task: Literal["causal-lm", "seq-classification", "text-to-image", "preference", "text-to-audio"] = Field(
        "causal-lm", description="built-in recipe: causal-lm (SFT), seq-classification, text-to-image, preference (DPO, "
        "ORPO, KTO, SimPO on TRL's trainers: see train.preference), text-to-audio (MusicGen: see train.audio)")
    model: str = Field(..., description="hub id, local path, the name of an input, or job:<JOB> (the model of a "
                       "finished job, from the job store)")
    base_model: str | None = Field(
        None, description="when train.model is a LoRA adapter: the model it adapts (hub id, local path or the name "
        "of an input), loaded and merged with the adapter before training; set for you by train.model: job:<JOB>; "
        "null = the base named in the adapter's adapter_config.json")
    data: DataSpec = Field(default_factory=DataSpec)
    lora: LoraSpec | None = Field(None, description="train a LoRA adapter instead of all weights; null = full fine-tune")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    distributed: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        "ddp",
        description="how several processes train: ddp = every process holds the whole model (DistributedDataParallel); "
        "fsdp = parameters, gradients and optimizer state sharded across processes (FSDP full shard, one unit per "
        "decoder layer); deepspeed-zero2 = DeepSpeed ZeRO stage 2 (optimizer state and gradients sharded), "
        "deepspeed-zero3 = stage 3 (parameters too), through accelerate's DeepSpeed integration, CUDA GPUs only. "
        "One process trains unsharded with ddp and fsdp",
    )
    preference: PreferenceSpec | None = Field(
        None, description="task preference: the method (dpo, orpo, kto, simpo), beta and the reference model; null = dpo")
    push_to_hub: PushToHubSpec | None = Field(
        None, description="publish the final model (or adapter) and its card to the Hugging Face Hub at the end of a "
        "successful job, from rank 0; the token comes from a `secrets:` entry (token_secret)")
    attn_implementation: Literal[ATTN_IMPLEMENTATIONS] = Field(  # type: ignore[valid-type]
        "auto", description="the attention kernel (from_pretrained's attn_implementation): sdpa, eager, "
        "flash_attention_2 (CUDA GPUs of compute capability 8.0+ with the flash-attn package); auto = transformers' choice")
    revision: str | None = Field(None, description="the Hub revision (branch, tag or commit) of train.model; null = main")
    trust_remote_code: bool = Field(
        False, description="run the Python code a Hub model ships (its own modelling files) inside the job; off by "
        "default; the plan says so when on")
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
    validation: ValidationSpec | None = Field(
        None, description="text-to-image: sample prompts rendered with fixed seeds at step 0 and every every_steps, "
        "into the outputs, the report and TensorBoard; the collapse check and the validation loss run there too; "
        "text-to-audio: WAV samples (validation.seconds long) from the base model, every every_steps and at the end")
    audio: AudioSpec = Field(default_factory=AudioSpec, description="text-to-audio: clip lengths, description dropout")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSpec":
        data, hp = self.data, self.hyperparameters
        check_image_task(self)
        if self.base_model is not None and self.base_model.startswith("job:"):
            raise ValueError("train.base_model takes a hub id, a local path or an input name; a job's model goes in "
                             "train.model (job:<JOB>), which brings the base of a LoRA adapter job by itself")
        check_preference_task(self)
        self._check_task_sections()
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
        self._check_unread_options()
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

    def _check_task_sections(self) -> None:
        """The sections and data options that belong to one recipe only."""
        data = self.data
        if self.task == "text-to-audio":
            causal = [name for name in ("format", "packing", "streaming", "chat_template", "labels")
                      if name in data.model_fields_set]
            if causal:
                raise ValueError(f"train.data.{causal[0]} does not apply to task text-to-audio (its data is a folder of "
                                 f"audio files with descriptions); remove it")
            if self.audio.min_seconds > self.audio.max_seconds:
                raise ValueError(f"train.audio.min_seconds ({self.audio.min_seconds}) is above max_seconds "
                                 f"({self.audio.max_seconds}); lower min_seconds or raise max_seconds")
            if self.distributed == "fsdp":
                raise ValueError("distributed: fsdp is not supported by task text-to-audio (the decoder is small: "
                                 "a MusicGen large decoder with its optimizer fits one 80 GB GPU); use ddp")
            if self.lora is not None and self.lora.quantize is not None:
                raise ValueError("train.lora.quantize is not supported by task text-to-audio; remove it")
            image = [n for n in ("steps", "loss_examples") if self.validation and n in self.validation.model_fields_set]
            if image:
                raise ValueError(f"train.validation.{image[0]} applies to task text-to-image only; remove it")
            return
        if self.validation is not None and "seconds" in self.validation.model_fields_set:
            raise ValueError("train.validation.seconds is the length of text-to-audio samples; remove it")
        if "audio" in self.model_fields_set:
            raise ValueError(f"train.audio applies to task text-to-audio only; remove it or set task: text-to-audio")

    def _check_unread_options(self) -> None:
        """The options this task's recipe would ignore without a word: a `train.data` option it does not read
        (`cloudtune.spec.data.unread_data_option`), and the transformers loading options (`from_pretrained`'s
        revision, trust_remote_code, attn_implementation) on the tasks that load their model otherwise."""
        problem = unread_data_option(self.task, self.data)
        if problem:
            raise ValueError(problem)
        if self.task in ("text-to-image", "text-to-audio"):
            loading = {"revision": self.revision is not None, "trust_remote_code": self.trust_remote_code,
                       "attn_implementation": self.attn_implementation != "auto"}
            given = [name for name, on in loading.items() if on]
            if given:
                loader = "diffusers' DiffusionPipeline" if self.task == "text-to-image" else "MusicGen's own class"
                raise ValueError(f"train.{given[0]} does not apply to task {self.task}: its recipe loads the model "
                                 f"(main revision) with {loader}, which is not given it, so it would be ignored\n"
                                 f"To fix: remove it"
                                 + (" (to train another revision, download it into a directory: huggingface-cli "
                                    "download ORG/NAME --revision REV --local-dir DIR, and set train.model to DIR)"
                                    if given[0] == "revision" else ""))

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

