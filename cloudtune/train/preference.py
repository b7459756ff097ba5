"""The preference-tuning recipe (`task: preference`): DPO, ORPO, KTO and SimPO on TRL's own trainers, inside the shared
training flow (`cloudtune.train.causal_lm.run_training`: complete-or-absent checkpoints and resume, SIGTERM, progress,
status file, TensorBoard, health, model card).

Trainers (TRL 1.16): dpo -> `trl.DPOTrainer`; kto -> `trl.KTOTrainer`; orpo -> `trl.experimental.orpo.ORPOTrainer`;
simpo -> `trl.experimental.cpo.CPOTrainer` with `loss_type="simpo"`, `cpo_alpha=0` (the SimPO paper's loss; TRL's
CPOConfig doc). The trainer class is cloudtune's Trainer combined with TRL's (`run_training(trainer_base=...)`), so
TRL computes the loss and the metrics and cloudtune writes the checkpoints.

The reference model (dpo, kto; `train.preference.reference`): with LoRA, TRL gets the adapter as `peft_config` and
computes the reference with the adapter switched off (its `ref_model` stays None: no second copy); without LoRA, TRL
loads a frozen copy, or with `precomputed` the reference log-probabilities are computed once before training (TRL's
`precompute_ref_log_probs`, cached by 🤗 Datasets on this node) and no copy is kept. orpo and simpo need none.

Data: the shapes of `cloudtune.data.preference`, checked record by record (file, line, field) before TRL reads them.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import phase, say
from cloudtune.data.preference import (check_preference_records, identical_pairs, label_value, no_pair_differs,
                                       one_sided_labels)
from cloudtune.data.records import NO_RECORDS_FIX, read_file_records
from cloudtune.errors import JobInputError
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.spec.preference import PreferenceSpec
from cloudtune.train.data import load_part, parts
from cloudtune.train.flow import device_type, lora_output_for, memory_settings, run_training
from cloudtune.train.loading import model_load_kwargs
from cloudtune.train.lora import lora_config
from cloudtune.train.models import (base_model_source, input_source, load_pretrained, model_shown, resolve_model_source,
                                    train_model_name)

TRAINERS: dict[str, tuple[str, str, str]] = {
    "dpo": ("trl", "DPOTrainer", "DPOConfig"),
    "kto": ("trl", "KTOTrainer", "KTOConfig"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig"),
}
"""method -> (module, trainer class, config class) in TRL 1.16."""

REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def trl_classes(method: str) -> tuple[type, type]:
    """(trainer class, config class) of `method` in TRL (see TRAINERS)."""
    import warnings

    module, trainer, config = TRAINERS[method]
    with warnings.catch_warnings():  # trl.experimental warns on import that its API may change
        warnings.simplefilter("ignore")
        mod = importlib.import_module(module)
    return getattr(mod, trainer), getattr(mod, config)


def counting_tokens(trainer_class: type) -> type:
    """`trainer_class` counting the tokens it trains on (the Trainer's `num_input_tokens_seen`, which the progress
    and tokens_per_second read) in batches without an `input_ids` column: ORPO's and CPO's
    `prompt_/chosen_/rejected_input_ids` — every non-padding token of every `*attention_mask` column."""

    class Counting(trainer_class):  # type: ignore[misc, valid-type]
        def _track_num_input_tokens(self, inputs: Any) -> None:
            if self.model.main_input_name in inputs or self.args.include_num_input_tokens_seen == "no":
                return super()._track_num_input_tokens(inputs)
            import torch

            masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "sum")]
            count = torch.as_tensor(sum(int(m.sum()) for m in masks), device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += int(self.accelerator.gather(count).sum().item())

    Counting.__name__ = Counting.__qualname__ = trainer_class.__name__
    return Counting


def keeping_count(trainer_class: type, examples: int, max_seq_len: int, shown: str) -> type:
    """`trainer_class` that says how many of the `examples` training records TRL's data preparation dropped (DPO
    drops a pair whose prompt alone fills `max_length`, = max_seq_len), and stops the job with one JobInputError line
    naming the input and the option when none is left (TRL's own error is a sampler's `num_samples=0`)."""

    class Keeping(trainer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kept = len(self.train_dataset) if self.train_dataset is not None else examples
            if kept == 0:
                raise JobInputError(f"input {shown}: TRL kept none of its {examples} training records: every prompt "
                                    f"fills train.hyperparameters.max_seq_len ({max_seq_len} tokens). To fix: raise "
                                    f"max_seq_len, or shorten the prompts")
            if kept < examples:
                say(f"data: {examples - kept} of {examples} training records dropped by TRL: their prompt alone fills "
                    f"max_seq_len ({max_seq_len} tokens); raise it to keep them")

    Keeping.__name__ = Keeping.__qualname__ = trainer_class.__name__
    return Keeping


def method_options(pref: PreferenceSpec, max_seq_len: int, lora: bool) -> dict[str, Any]:
    """The TRL config keywords of `train.preference` (names as in DPOConfig, KTOConfig, ORPOConfig, CPOConfig).
    `max_length` caps prompt + answer in tokens (hyperparameters.max_seq_len)."""
    options: dict[str, Any] = {"beta": pref.beta, "max_length": max_seq_len}
    if pref.method in ("dpo", "kto"):
        options["precompute_ref_log_probs"] = pref.reference == "precomputed"
    if pref.method == "kto":  # KTO's KL term pairs each example with its neighbour in a fixed-order batch (TRL)
        options |= {"desirable_weight": pref.desirable_weight, "undesirable_weight": pref.undesirable_weight,
                    "train_sampling_strategy": "sequential"}
    if pref.method == "simpo":
        options |= {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": pref.simpo_gamma}
    return options


def trl_arguments(args: Any, config_class: type, options: dict[str, Any]) -> Any:
    """`config_class` (a TRL config, a TrainingArguments subclass) holding every TrainingArguments value of `args`
    (the shared flow's, `cloudtune.train.trainer`) and the method's `options`; cloudtune's own attributes on `args`
    (`ct_*`) are carried over."""
    from transformers import TrainingArguments

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values["accelerator_config"] = dataclasses.asdict(args.accelerator_config)
    trl_fields = {f.name for f in dataclasses.fields(config_class)}
    values |= {k: v for k, v in options.items() if k in trl_fields}
    if "disable_dropout" in trl_fields:  # TRL's default: the policy's and the reference's log-probs comparable
        values.setdefault("disable_dropout", True)
    config = config_class(**values)
    for name, value in vars(args).items():
        if name.startswith("ct_"):
            setattr(config, name, value)
    return config


def reference_model(train: TrainSpec, model: Any, load: Any) -> Any:
    """The `ref_model` handed to TRL: None when TRL needs no separate model (LoRA: the adapter is switched off;
    `precomputed`; orpo and simpo), else a frozen copy loaded by `load()` (`reference: copy`, or auto without LoRA).

    Loaded here rather than by TRL so that it comes from the same source and load options as the policy (a merged
    SFT adapter of `train.model: job:<JOB>` included)."""
    pref = train.preference
    if pref.method in ("orpo", "simpo") or pref.reference == "precomputed":
        return None
    if train.lora is not None and pref.reference == "auto":
        return None
    ref = load()
    ref.eval()
    ref.requires_grad_(False)
    return ref


def read_preference_data(ctx: RuntimeContext, name: str, method: str, shown: str | None) -> tuple[Any, str, str]:
    """(dataset, shape, style) of input `name`: every record checked (file, line, field; see
    `cloudtune.data.preference`), then loaded by 🤗 Datasets. KTO's unpaired `label` is TRL's boolean column."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(ctx.inputs[name])
    found = parts(path, shown)
    records = [r for part in found for file, where in part.files for r in read_file_records(file, "text", where)]
    if not records:
        raise JobInputError(f"data input {shown or name} holds no records. {NO_RECORDS_FIX}")
    shape, style = check_preference_records(records, method) or ("explicit", "text")
    problem = no_pair_differs(records) if shape != "unpaired" else None
    if problem:
        raise JobInputError(problem)
    one_sided = one_sided_labels(records) if shape == "unpaired" else None
    if one_sided:
        say(f"warning: {one_sided}")
    same = identical_pairs(records)
    if same:
        say(f"data: {len(same)} of {len(records)} pairs have the same chosen and rejected answer (first: {same[0]}); "
            f"they teach nothing")
    loaded = [load_part(part, "text") for part in found]
    ds = loaded[0] if len(loaded) == 1 else datasets.concatenate_datasets(loaded)
    keep = {"explicit": ("prompt", "chosen", "rejected"), "implicit": ("chosen", "rejected"),
            "unpaired": ("prompt", "completion", "label")}[shape]
    ds = ds.select_columns(list(keep))
    if shape == "unpaired" and ds.features["label"].dtype != "bool":  # a CSV's text or 0/1 labels: TRL's booleans
        ds = ds.map(lambda row: {"label": label_value(row["label"])},
                    features=datasets.Features({**ds.features, "label": datasets.Value("bool")}))
    return ds, shape, style


def run_preference(ctx: RuntimeContext, train: TrainSpec, checkpoint: CheckpointSpec) -> dict[str, float]:
    """Tune `train.model` on preference data (see the module doc); writes the model (or adapter), tokenizer,
    metrics.json and the model card to ctx.model_dir. Returns the metrics (`rewards_*` from the last evaluation)."""
    from transformers import set_seed

    pref = train.preference or PreferenceSpec()
    hp = train.hyperparameters
    set_seed(hp.seed)
    trainer_class, config_class = trl_classes(pref.method)
    source = resolve_model_source(ctx, train.model)
    device = device_type()
    shown = model_shown(ctx, train)
    kwargs = model_load_kwargs(train, "causal-lm", device)

    def load() -> tuple[Any, Any]:
        return load_pretrained(source, "causal-lm", shown=shown, max_seq_len=hp.max_seq_len,
                               base=base_model_source(ctx, train), load_kwargs=kwargs)

    with phase("loading model", source):
        tokenizer, model = load()
    train = memory_settings(lora_output_for(train, model), model, device)
    if train.lora is None:  # a merged SFT adapter comes back frozen (peft loads adapters for inference): train all
        model.requires_grad_(True)
    with phase("preparing data", f"input {train.data.train!r} ({pref.method} pairs)"):
        train_ds, shape, style = read_preference_data(ctx, train.data.train, pref.method, input_source(ctx, train.data.train))
        eval_ds = None
        if train.data.eval is not None:
            eval_ds, *_ = read_preference_data(ctx, train.data.eval, pref.method, input_source(ctx, train.data.eval))
    say(f"data: preference pairs ({shape}, {style}), {len(train_ds)} training examples"
         + (f", {len(eval_ds)} eval examples" if eval_ds is not None else ", no eval set"))
    peft_config = None
    if train.lora is not None:
        peft_config = lora_config(model, train.lora, "causal-lm")
    ref = reference_model(train, model, lambda: load()[1])
    say(f"{pref.method}: beta {pref.beta}, reference "
         + ("none (the loss needs none)" if pref.method in ("orpo", "simpo")
            else "precomputed log-probabilities" if pref.reference == "precomputed"
            else "the base model with the adapter switched off" if ref is None else "a frozen copy of the model"))
    metrics = run_training(
        ctx, train, checkpoint, processing_class=tokenizer, model=model, train_ds=train_ds, eval_ds=eval_ds, collator=None,
        base_model=train_model_name(train, source, ctx), data_info={"train_examples": len(train_ds), "format": shape},
        trainer_base=keeping_count(counting_tokens(trainer_class), len(train_ds), hp.max_seq_len,
                                   input_source(ctx, train.data.train) or train.data.train),
        make_arguments=lambda args: trl_arguments(args, config_class, method_options(pref, hp.max_seq_len, peft_config is not None)),
        trainer_kwargs={"peft_config": peft_config} | ({"ref_model": ref} if pref.method in ("dpo", "kto") else {}),
        callbacks=[preference_health_callback()], perplexity=False,  # exp of a preference loss is no perplexity
    )
    return metrics


def margin_warning(history: list[tuple[int, float, float, float]], window: int = 3) -> str | None:
    """The health warning for the logged rewards [(step, chosen, rejected, margin)], or None.

    Warned (Rafailov et al. 2024 and the TRL docs read these curves): the margin collapsing — after rising, it fell
    back below a fifth of its best over the last `window` logs; or the chosen reward falling together with the
    rejected one — both fell over the last `window` logs while the margin grew (the policy lowers the likelihood of
    both answers: a sign of over-optimisation)."""
    if len(history) < window + 1:
        return None
    recent = history[-(window + 1):]
    best = max(h[3] for h in history)
    step = recent[-1][0]
    if best > 0.05 and all(h[3] < best / 5 for h in recent[1:]) and recent[0][3] >= recent[-1][3]:
        return (f"step {step}: the reward margin collapsed to {recent[-1][3]:.3g} (best {best:.3g}): the policy no "
                f"longer prefers the chosen answers; lower the learning rate or raise train.preference.beta")
    falling = all(b[1] < a[1] and b[2] < a[2] for a, b in zip(recent, recent[1:]))
    if falling and recent[-1][1] < 0 and recent[-1][3] > recent[0][3]:
        return (f"step {step}: the chosen reward fell with the rejected one ({recent[0][1]:.3g} -> {recent[-1][1]:.3g};"
                f" rejected {recent[0][2]:.3g} -> {recent[-1][2]:.3g}): the policy lowers the likelihood of both "
                f"answers; lower the learning rate, raise beta, or stop earlier")
    return None


def preference_health_callback() -> Any:
    """A TrainerCallback that reads the logged `rewards/*` figures and prints the health warning of
    `margin_warning` once per kind (`[cloudtune] health: ...`, rank 0)."""
    from transformers import TrainerCallback

    from cloudtune.train.health import HEALTH_PREFIX

    class PreferenceHealth(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[tuple[int, float, float, float]] = []
            self.warned: set[str] = set()

        def attach(self, trainer: Any) -> None:
            """Say what the trainer holds in memory for the reference: its `ref_model`'s parameters (0 when None:
            the adapter is switched off, or the log-probabilities were precomputed) beside the policy's."""
            ref = getattr(trainer, "ref_model", None)
            held = sum(p.numel() for p in ref.parameters()) if ref is not None else 0
            policy = sum(p.numel() for p in trainer.model.parameters())
            if trainer.args.process_index == 0:
                say(f"reference model in memory: {held} parameters; policy {policy}")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
            logs = logs or {}
            if not state.is_world_process_zero or not all(k in logs for k in REWARD_METRICS[:3]):
                return
            self.history.append((int(state.global_step), float(logs["rewards/chosen"]),
                                 float(logs["rewards/rejected"]), float(logs["rewards/margins"])))
            warning = margin_warning(self.history)
            kind = warning.split(": ", 1)[1][:20] if warning else None
            if warning and kind not in self.warned:
                self.warned.add(kind)
                say(HEALTH_PREFIX + warning)

    return PreferenceHealth()


__all__ = ["REWARD_METRICS", "TRAINERS", "keeping_count", "margin_warning", "method_options", "read_preference_data",
           "reference_model", "run_preference", "trl_arguments", "trl_classes"]
