"""The plan-time memory check, shared by every provider: the estimate per GPU (cloudtune.memory) for the machine a
plan chose, shown by the dry run, and the refusal of a job clearly beyond it.

A job is refused (UnsupportedSpec, exit 2) when its estimate is over the accelerator's memory x (1 + MARGIN) and
`train.memory_check` is true; the fix names what would fit: the smallest accelerator the provider offers, LoRA,
QLoRA (`lora.quantize: 4bit`), FSDP or more GPUs, gradient checkpointing, a smaller batch. Local jobs run on this
machine's devices, which the plan does not know: their estimate is shown and never refused. `lora.quantize` is
refused where no CUDA GPU will be (TPU, cpu, a local job on a machine without an NVIDIA driver).

Imports neither torch nor transformers.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.errors import UnsupportedSpec
from cloudtune.memory import (
    GB, HEADROOM, MARGIN, MemoryEstimate, ModelFacts, Setup, choose_checkpointing, estimate, human, hub_model_facts,
    local_model_facts, plan_precision, setup_for, count,
)
from cloudtune.catalog import CatalogError, load_catalog
from cloudtune.data.savedmodel import find_saved_model
from cloudtune.kit.sweep import numbers, sweep_trial
from cloudtune.memory_audio import audio_model, clip_setup
from cloudtune.spec import is_remote
from cloudtune.spec.sweep import Scalar, largest_values
from cloudtune.units import beside

if TYPE_CHECKING:
    from cloudtune.catalog import Catalog
    from cloudtune.spec import JobSpec


def local_cuda() -> bool:
    """Whether this machine has an NVIDIA GPU a local job could use, without importing torch: the driver's device
    list (/proc/driver/nvidia/gpus, /dev/nvidia0), unless CUDA_VISIBLE_DEVICES hides every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()
    except OSError:
        return False


def _model_dir(spec: "JobSpec", value: str) -> Path | None:
    """The local directory a model name points at (a path, or an input holding a local path), else None."""
    uri = spec.inputs.get(value, value)
    if is_remote(uri) or not uri.startswith("/"):
        return None
    return find_saved_model(Path(uri))


def model_facts(spec: "JobSpec") -> ModelFacts | None:
    """The facts of the model a train job fine-tunes: its local config.json (and weight headers), the base of a
    LoRA adapter, a hub id's cached config or cloudtune's table; None when unknown (no refusal then)."""
    import json

    assert spec.train is not None
    if spec.train.model.startswith("job:"):  # not resolved (cloudtune.api resolves it before planning): unknown
        return None
    train = spec.train
    for name in (train.base_model, train.model) if train.base_model else (train.model,):
        assert name is not None
        directory = _model_dir(spec, name)
        if directory is None:
            if not name.startswith("/") and name not in spec.inputs and "://" not in name:
                return hub_model_facts(name)
            continue
        if (directory / "config.json").is_file():
            return local_model_facts(directory, name)
        try:  # an adapter: its base, as adapter_config.json names it
            base = json.loads((directory / "adapter_config.json").read_text()).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            base = None
        if isinstance(base, str) and base:
            found = local_model_facts(Path(base), base) if base.startswith("/") else hub_model_facts(base)
            if found is not None:
                return found
    return None


def _device(spec: "JobSpec", provider: str, instance_type: str) -> tuple[str | None, int, float | None, bool]:
    """(accelerator name or None for cpu, devices per node, memory per device in GB or None when unknown, bf16)."""
    catalog = load_catalog()
    accel = spec.resources.accel
    offer = None
    try:
        offer = catalog.by_instance_type(provider, instance_type)
    except CatalogError:  # a plugin provider the catalog does not list
        pass
    if offer is not None:
        if offer.count == 0:
            return None, 0, None, False
        info = catalog.info(offer.accelerator)
        return offer.accelerator, offer.count, offer.accelerator_memory_gb or (info.memory_gb if info else None), \
            bool(info and info.peak_bf16_tflops)
    if accel.is_cpu:
        return None, 0, None, False
    info = catalog.info(accel.name)
    return (info.name if info else accel.name), accel.count, info.memory_gb if info else None, \
        bool(info and info.peak_bf16_tflops)


def check_quantize(spec: "JobSpec", provider: str, accelerator: str | None) -> None:
    """Refuse `lora.quantize` where the job will have no CUDA GPU (bitsandbytes' 4-bit kernels are CUDA only)."""
    train = spec.train
    if train is None or train.lora is None or train.lora.quantize is None:
        return
    fix_gpu = "run it on a CUDA GPU (e.g. resources.accelerator: L4:1 with --provider aws, gcp or azure), or remove " \
              "lora.quantize to train the LoRA adapter on a bf16 (or, on CPU, fp32) base model"
    if accelerator is not None and accelerator.upper().startswith("TPU"):
        raise UnsupportedSpec(f"train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes); resources.accelerator "
                              f"{accelerator} is a TPU, which trains through PyTorch/XLA", fix=fix_gpu)
    if provider == "local":
        if not local_cuda():
            raise UnsupportedSpec("train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes), and this machine has "
                                  "none (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them): the local job trains "
                                  "on CPU", fix=fix_gpu)
    elif accelerator is None:
        raise UnsupportedSpec("train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes); resources.accelerator is "
                              "cpu", fix=fix_gpu)
    elif spec.image is None:
        raise UnsupportedSpec("train.lora.quantize: 4bit needs bitsandbytes in the image, and the provider's stock "
                              "PyTorch image (image: null) does not have it, nor does the wheelhouse cloudtune installs "
                              "there", fix="set image: to cloudtune's GPU image (containers/gpu, which installs "
                              "cloudtune[train,qlora]) or another image with bitsandbytes, or remove lora.quantize")


def _estimates(facts: ModelFacts, setup: Setup, requested: bool | None,
               budget: float | None) -> tuple[MemoryEstimate, str]:
    """The estimate with gradient checkpointing as it will be (the user's choice, or decided for null), and why."""
    est = estimate(facts, setup)
    on = choose_checkpointing(est, requested, budget)
    why = "as set" if requested is not None else (
        "null: on, the activations would not fit without it" if on else
        "null: off, it fits without" if budget is not None else "null: decided at run time from the device's memory")
    return replace(est, gradient_checkpointing=on), why


def _audio_model(spec: "JobSpec") -> tuple[ModelFacts, float] | None:
    """(facts, codec frame rate) of a text-to-audio job's MusicGen (cloudtune.memory_audio), None when unknown."""
    assert spec.train is not None
    name = spec.train.model
    if name.startswith("job:"):
        return None
    directory = _model_dir(spec, name)
    hub = name if directory is None and not name.startswith("/") and name not in spec.inputs and "://" not in name else None
    return audio_model(directory, hub)


def plan_memory(spec: "JobSpec", provider: str, instance_type: str) -> dict[str, Any] | None:
    """The dry run's memory section of a train job (None for a command job), after refusing what cannot fit or
    cannot run (see the module docstring). Sizes in bytes; `device_memory` None when not checked."""
    if spec.train is None:
        return None
    accelerator, per_node, memory_gb, bf16 = _device(spec, provider, instance_type)
    check_quantize(spec, provider, accelerator)
    if spec.train.task == "text-to-image":
        return _image_memory(spec, provider, accelerator, memory_gb, bf16)
    audio = _audio_model(spec) if spec.train.task == "text-to-audio" else None
    facts = audio[0] if audio else (None if spec.train.task == "text-to-audio" else model_facts(spec))
    local = provider == "local"
    section: dict[str, Any] = {"accelerator": None if local else accelerator, "device_memory": None,
                               "margin": MARGIN, "model": None, "estimate": None, "local": local}
    if facts is None:
        return section
    train = spec.train
    tpu = bool(accelerator and accelerator.upper().startswith("TPU"))
    precision = plan_precision(train.hyperparameters.precision, None if local else accelerator, bf16 or tpu)
    world = spec.resources.nodes * (1 if local else spec.processes_per_node(per_node or None))
    if tpu and train.distributed == "ddp":  # one process per host; without FSDPv2 every chip holds the whole model
        world = 1
    checked = not local and accelerator is not None and memory_gb is not None
    budget = memory_gb * GB * (1 - HEADROOM) if checked and memory_gb else None
    setup = setup_for(train, precision, world, gradient_checkpointing=False)
    if audio:  # the decoder's sequence is the clip's codec frames (cloudtune.memory_audio)
        setup = clip_setup(setup, facts, audio[1], train.audio.max_seconds)
    est, why = _estimates(facts, setup, train.hyperparameters.gradient_checkpointing, budget)
    section.update(model=facts.source, params=facts.params, precision=precision, world_size=world,
                   estimate=est.to_dict(), gradient_checkpointing=why)
    if checked and memory_gb:
        section["device_memory"] = int(memory_gb * GB)
        limit = memory_gb * GB * (1 + MARGIN)
        if est.total > limit and train.memory_check:
            raise _refusal(spec, provider, facts, replace(setup, gradient_checkpointing=est.gradient_checkpointing),
                           est, accelerator or "", memory_gb)
    return section


def heaviest_values(spec: "JobSpec", provider: str, instance_type: str) -> dict[str, Scalar]:
    """The values of the sweep's trial that needs the most memory per GPU: the high end of each range and the largest
    number of each numeric choice (`largest_values`), and of each other choice (texts, booleans) the value whose
    trial the estimate puts highest (gradient_checkpointing false, precision fp32, ...), the first of equals. Each
    choice is weighed with the others at their heaviest so far, in parameter order. `spec` is a train job with a
    sweep; SpecError for a trial the train options refuse (cloudtune.kit.sweep.sweep_trial)."""
    assert spec.sweep is not None
    values = largest_values(spec.sweep)
    for path, rng in spec.sweep.ranges().items():
        if rng.choice is None or numbers(rng) or len(rng.choice) < 2:
            continue
        weights = [_estimated_total(sweep_trial(spec, {**values, path: v}), provider, instance_type) for v in rng.choice]
        values[path] = rng.choice[weights.index(max(weights))]
    return values


def _estimated_total(trial: "JobSpec", provider: str, instance_type: str) -> int:
    """The memory estimate per GPU of a train job's `trial` in bytes, refused or not (0 when the model is unknown)."""
    assert trial.train is not None
    unchecked = trial.model_copy(update={"train": trial.train.model_copy(update={"memory_check": False})})
    section = plan_memory(unchecked, provider, instance_type) or {}
    return int((section.get("estimate") or {}).get("total", 0))


def sweep_memory(spec: "JobSpec", provider: str, instance_type: str) -> tuple[dict[str, Any] | None, dict[str, Scalar]]:
    """A sweep's memory section (`plan_memory`, refusal included) for its memory-heaviest trial, and that trial's
    values (`heaviest_values`): a sweep fits when its heaviest trial does."""
    values = heaviest_values(spec, provider, instance_type)
    return plan_memory(sweep_trial(spec, values), provider, instance_type), values


def _refusal(spec: "JobSpec", provider: str, facts: ModelFacts, setup: Setup, est: MemoryEstimate,
             accelerator: str, memory_gb: float) -> UnsupportedSpec:
    """The error for a job over its GPU: the estimate, the device, and the settings that would fit."""
    parts = ", ".join(f"{k} {human(getattr(est, k))}" for k in ("weights", "gradients", "optimizer", "activations"))
    what = "LoRA" + (" (4-bit base)" if setup.quantize else "") if setup.lora_r is not None else "full fine-tune"
    needed, limit = beside(est.total / GB, memory_gb * (1 + MARGIN))  # never shown rounded onto the limit
    message = (f"resources.accelerator {spec.resources.accelerator}: training {count(facts.params)} parameters "
               f"({what}, {setup.precision}, batch {setup.batch_size} x {setup.seq_len} tokens, {setup.world_size} "
               f"process{'es' if setup.world_size > 1 else ''}, {setup.distributed}) needs about {needed} GB "
               f"per GPU ({parts}), over the {memory_gb:g} GB of one {accelerator} (refused above "
               f"{limit} GB: its memory + {MARGIN:.0%} for the estimate's error)")
    fixes = fitting_alternatives(spec, provider, facts, setup, accelerator)
    fix = "; or ".join(fixes[:5]) if fixes else "train a smaller model"
    return UnsupportedSpec(message, fix=fix + "; or set train.memory_check: false to launch it anyway")


def _total(facts: ModelFacts, setup: Setup, requested: bool | None, memory_gb: float) -> tuple[bool, int]:
    """(fits in memory_gb less HEADROOM, the estimate in bytes) with checkpointing as null or the user decide it."""
    budget = memory_gb * GB * (1 - HEADROOM)
    est = estimate(facts, setup)
    total = est.total_for(choose_checkpointing(est, requested, budget))
    return total <= budget, total


def _bigger_accelerator(spec: "JobSpec", provider: str, facts: ModelFacts, setup: Setup,
                        accelerator: str, catalog: "Catalog") -> str | None:
    """`resources.accelerator: NAME:COUNT` of the smallest accelerator the provider offers in this count (a TPU for a
    TPU, a GPU for a GPU) that the same job fits, or None."""
    per_node = spec.resources.accel.count
    tpu = accelerator.upper().startswith("TPU")
    candidates = sorted((info for info in catalog.accelerator_infos
                         if info.name.upper().startswith("TPU") == tpu and info.name != accelerator
                         and per_node in catalog.counts(provider, info.name)), key=lambda i: i.memory_gb)
    requested = spec.train.hyperparameters.gradient_checkpointing if spec.train else None
    for info in candidates:
        precision = plan_precision(spec.train.hyperparameters.precision if spec.train else "auto", info.name,
                                   bool(info.peak_bf16_tflops) or tpu)
        fits, total = _total(facts, replace(setup, precision=precision), requested, info.memory_gb)
        if fits:
            return f"use resources.accelerator: {info.name}:{per_node} (about {human(total)} of its {info.memory_gb:g} GB)"
    return None


def fitting_alternatives(spec: "JobSpec", provider: str, facts: ModelFacts, setup: Setup, accelerator: str) -> list[str]:
    """The changes that make the job fit its GPU (or the smallest bigger one), each with its estimate, cheapest
    change first: the accelerator, LoRA, QLoRA, gradient checkpointing, FSDP / more GPUs, a smaller batch."""
    catalog = load_catalog()
    try:
        memory_gb = catalog.info(accelerator).memory_gb  # type: ignore[union-attr]
    except (CatalogError, AttributeError):
        return []
    hp = spec.train.hyperparameters if spec.train else None
    requested = hp.gradient_checkpointing if hp else None
    tpu = accelerator.upper().startswith("TPU")
    out: list[str] = []
    try:
        bigger = _bigger_accelerator(spec, provider, facts, setup, accelerator, catalog)
    except CatalogError:
        bigger = None
    if bigger:
        out.append(bigger)
    options: list[tuple[str, Setup, bool | None]] = []
    if setup.lora_r is None:
        options.append(("add train.lora: {} (LoRA r=16 on the attention and MLP projections)",
                        replace(setup, lora_r=16, lora_targets="auto", lora_dropout=0.05), requested))
    if not tpu and setup.distributed == "ddp" and setup.quantize is None:
        options.append(("set train.lora.quantize: 4bit (QLoRA)" if setup.lora_r is not None else
                        "add train.lora: {quantize: 4bit} (QLoRA)",
                        replace(setup, lora_r=setup.lora_r or 16, quantize="4bit", lora_dropout=0.05), requested))
    if requested is False:
        options.append(("set hyperparameters.gradient_checkpointing: true (or leave it out: null decides)",
                        replace(setup, gradient_checkpointing=True), True))
    devices = spec.resources.nodes * max(spec.resources.accel.count, 1)  # a TPU host's chips share one process
    if devices > 1 and setup.distributed == "ddp" and setup.quantize is None:
        options.append(("set train.distributed: fsdp", replace(setup, distributed="fsdp", world_size=devices),
                        requested))
    for label, option, gc in options:
        fits, total = _total(facts, option, gc, memory_gb)
        if fits:
            out.append(f"{label}: about {human(total)} per GPU")
    out += _scale_out(spec, provider, facts, setup, accelerator, memory_gb, catalog)
    return out


def _scale_out(spec: "JobSpec", provider: str, facts: ModelFacts, setup: Setup, accelerator: str,
               memory_gb: float, catalog: "Catalog") -> list[str]:
    """More GPUs under FSDP (the counts the provider offers), or a smaller batch with more accumulation."""
    out: list[str] = []
    hp = spec.train.hyperparameters if spec.train else None
    requested = hp.gradient_checkpointing if hp else None
    per_node = spec.resources.accel.count
    try:
        counts = [c for c in catalog.counts(provider, accelerator) if c > per_node] if provider != "local" else []
    except CatalogError:
        counts = []
    if setup.quantize is None:
        for count in counts:
            option = replace(setup, distributed="fsdp", world_size=spec.resources.nodes * count)
            fits, total = _total(facts, option, requested, memory_gb)
            if fits:
                out.append(f"use resources.accelerator: {accelerator}:{count} with train.distributed: fsdp "
                           f"(about {human(total)} per GPU)")
                break
    batch = setup.batch_size // 2
    while batch >= 1:
        fits, total = _total(facts, replace(setup, batch_size=batch), requested, memory_gb)
        if fits:
            accumulation = (hp.gradient_accumulation_steps if hp else 1) * setup.batch_size // batch
            out.append(f"set hyperparameters.batch_size: {batch} with gradient_accumulation_steps: {accumulation} "
                       f"(the same effective batch; about {human(total)} per GPU)")
            break
        batch //= 2
    return out


def _image_memory(spec: "JobSpec", provider: str, accelerator: str | None, memory_gb: float | None,
                  bf16: bool) -> dict[str, Any]:
    """The memory section of a text-to-image job (cloudtune.memory_image): the UNet family's weights, the LoRA, the
    activations at the latent size; a job clearly over its GPU is refused like a text job."""
    from cloudtune.memory_image import estimate_image, family_of

    assert spec.train is not None
    train, local = spec.train, provider == "local"
    section: dict[str, Any] = {"accelerator": None if local else accelerator, "device_memory": None,
                               "margin": MARGIN, "model": None, "estimate": None, "local": local}
    family = family_of(train.model, _model_dir(spec, train.model))
    if family is None:
        return section
    precision = plan_precision(train.hyperparameters.precision, None if local else accelerator, bf16)
    requested = train.hyperparameters.gradient_checkpointing
    checked = not local and accelerator is not None and memory_gb is not None
    est = estimate_image(family, train, precision, bool(requested))
    if requested is None and checked and memory_gb and est.total > memory_gb * GB * (1 - HEADROOM):
        est = estimate_image(family, train, precision, True)
    why = "as set" if requested is not None else ("null: on, the activations would not fit without it"
                                                  if est.gradient_checkpointing else "null: off")
    section.update(model=family.name, params=family.unet + family.text + family.vae, precision=precision,
                   world_size=spec.resources.nodes * (1 if local else spec.processes_per_node()),
                   estimate=est.to_dict(), gradient_checkpointing=why)
    if checked and memory_gb:
        section["device_memory"] = int(memory_gb * GB)
        if est.total > memory_gb * GB * (1 + MARGIN) and train.memory_check:
            raise UnsupportedSpec(
                f"resources.accelerator {spec.resources.accelerator}: a LoRA on {family.name} at resolution "
                f"{train.hyperparameters.resolution or 512}, batch {train.hyperparameters.batch_size}, {precision}, "
                f"needs about {beside(est.total / GB, memory_gb * (1 + MARGIN))[0]} GB per GPU, over the "
                f"{memory_gb:g} GB of one {accelerator}",
                fix="lower hyperparameters.batch_size or resolution, set gradient_checkpointing: true, use "
                    "optimizer: adamw_8bit or lora.quantize: 4bit, or a GPU with more memory; or set "
                    "train.memory_check: false to launch it anyway")
    return section
