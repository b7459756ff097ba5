"""The recipe's refusals that the spec, the catalog and the local model dir decide, made at plan time (`validate`
and every dry run) instead of inside the paid job. The job keeps its own checks as a second line; each rule here
names the in-job check it mirrors.

* precision per accelerator (cloudtune.catalog.precision; in the job: cloudtune.train.arguments.resolve_precision and
  cloudtune.train.xla.xla_precision);
* `lora.quantize: 4bit` on a TPU (cloudtune.train.loading.check_quantize); on cpu it is refused by the dry run's
  memory check, which knows whether a local job has a GPU (cloudtune.memory_check.check_quantize);
* a local LoRA adapter dir as `train.model` with `lora.quantize`, or with `lora` and `distributed: fsdp`, and
  `train.base_model` beside a model that is not an adapter (cloudtune.train.models.load_pretrained,
  lora_output_for).

Imports neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cloudtune.catalog.precision import precision_problem
from cloudtune.data.modeldir import is_adapter_dir

if TYPE_CHECKING:
    from cloudtune.spec import JobSpec, TrainSpec


def precision_problems(spec: "JobSpec", train: "TrainSpec") -> list[str]:
    """The precision and quantization rules of `spec.resources.accelerator` (one line each, with the fix)."""
    from cloudtune.catalog import CatalogError, load_catalog

    accel = spec.resources.accel
    try:
        info = None if accel.is_cpu else load_catalog().info(accel.name)
    except CatalogError:  # reported by the spec's own accelerator check
        return []
    if info is None and not accel.is_cpu:
        return []
    problems = []
    problem = precision_problem(train.hyperparameters.precision, info, spec.resources.accelerator)
    if problem:
        problems.append(problem)
    lora = train.lora
    if lora is not None and lora.quantize is not None and info is not None and info.vendor == "google":
        problems.append(f"train.lora.quantize: 4bit needs a CUDA GPU (bitsandbytes); resources.accelerator "
                        f"{spec.resources.accelerator} is a TPU, which trains through PyTorch/XLA. To fix: run it on "
                        f"a CUDA GPU (e.g. L4:1), or remove lora.quantize to train the adapter on a bf16 base")
    return problems


def adapter_problems(train: "TrainSpec", model_dir: Path | None, shown: str) -> list[str]:
    """What the recipe refuses about a local `train.model` dir (`model_dir`, named `shown`) being or not being a
    LoRA adapter. `model_dir` None: not a local model (a hub id, a bucket, a job's model): nothing checked."""
    if model_dir is None:
        return []

    lora = train.lora
    if not is_adapter_dir(model_dir):
        if train.base_model:
            return [f"train.base_model is set, but train.model {shown} is not a LoRA adapter (no adapter_config.json "
                    f"beside its weights). To fix: remove train.base_model"]
        return []
    if lora is not None and lora.quantize is not None:
        return [f"train.lora.quantize: train.model {shown} is a LoRA adapter, which is merged into its base before "
                f"training, and merging into 4-bit weights rounds the adapter away. To fix: remove quantize, or train "
                f"on a merged model (lora.merge: true in the job that made it)"]
    if lora is not None and not lora.merge and train.distributed == "fsdp":
        return [f"train.lora on train.model {shown}, a LoRA adapter, writes merged weights, which distributed: fsdp "
                f"cannot gather in one process. To fix: use distributed: ddp, or train all weights (remove train.lora)"]
    return []
