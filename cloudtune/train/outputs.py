"""What rank 0 writes to the model dir at the end of a run: the model (full weights, a LoRA adapter, or merged weights
and the adapter), the tokenizer or processor, metrics.json, the loss and learning-rate plots (`cloudtune.train.plots`)
and the model card (README.md). Every rank takes part in gathering an FSDP model's state first."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say
from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import TrainSpec
from cloudtune.train.card import write_model_card
from cloudtune.train.lora import save_classifier_config, save_lora
from cloudtune.train.models import hub_model_id, model_card_base
from cloudtune.train.plots import write_training_plots
from cloudtune.train.xla import spmd_state_dict, unwrap_spmd, without_tied


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(ctx: RuntimeContext, train: TrainSpec, trainer: Any, base_model: str, data_info: dict[str, Any],
                  metrics: dict[str, float], precision: str, xla: str | None,
                  save_model: Callable[[Any, Path], None] | None = None) -> None:
    """Rank 0 writes the model (or adapter; `save_model(trainer, model_dir)` instead when a recipe gives one), the
    trainer's processing class (tokenizer, processor), metrics.json, the plots and the model card; every rank takes
    part in gathering an FSDP model's state first."""
    # FSDP: every rank takes part in gathering the full (unsharded) state dict; rank 0 gets it and writes it
    full_state = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    xla_spmd = getattr(trainer, "is_fsdp_xla_v2_enabled", False)
    if xla_spmd:  # XLA FSDPv2: the gathered CPU state under the plain model's names (cloudtune.train.xla)
        full_state = spmd_state_dict(trainer.model)
    if trainer.args.process_index == 0:
        model_dir = Path(ctx.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        final = trainer.accelerator.unwrap_model(trainer.model)
        if xla is not None:  # saved from the CPU: files that load anywhere
            final = unwrap_spmd(final)
            if not xla_spmd:
                final = final.to("cpu")
        if save_model is not None:
            save_model(trainer, model_dir)
        elif xla_spmd and train.lora is None:
            final.save_pretrained(str(model_dir), state_dict=without_tied(final, full_state))
        elif full_state is not None and train.lora is not None:  # the adapter's weights, taken from the full state
            final.peft_config["default"].base_model_name_or_path = base_model
            final.save_pretrained(str(model_dir), state_dict=full_state)
            save_classifier_config(final, model_dir)
        elif full_state is not None:
            # the gathered copies of tied weights (lm_head = wte) are separate tensors: drop the tied names
            tied = set(dict(final.named_parameters(remove_duplicate=False))) - set(dict(final.named_parameters()))
            final.save_pretrained(str(model_dir), state_dict={k: v for k, v in full_state.items() if k not in tied})
        elif train.lora is not None:
            save_lora(final, model_dir, train.lora.merge, base_model)
        else:
            final.save_pretrained(str(model_dir))
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(model_dir))
        write_json(model_dir / "metrics.json", metrics)
        try:  # PNG loss and learning-rate plots; never fails the job
            write_training_plots(model_dir, trainer.state.log_history)
        except Exception as exc:  # noqa: BLE001
            say(f"warning: plots not written: {exc}")
        write_model_card(model_dir, train, base_model=model_card_base(ctx, train, base_model),
                         hub_id=hub_model_id(ctx, train), data_info=data_info, metrics=metrics, precision=precision)
        say(f"model, metrics.json and README.md written to {model_dir}")
    trainer.accelerator.wait_for_everyone()
