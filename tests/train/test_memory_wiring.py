"""The recipes load through cloudtune.train.loading: QLoRA refused in the job where it cannot run (one line, before
any data is read), a LoRA adapter model refused for QLoRA, and an undecided gradient_checkpointing handed to the
Trainer as a plain decision (off on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.errors import JobInputError
from cloudtune.spec import CheckpointSpec
from cloudtune.train.causal_lm import run_causal_lm
from cloudtune.train.flow import memory_settings
from cloudtune.train.models import load_pretrained

from .conftest import SHAPES, make_ctx, make_train, write_records


def test_qlora_on_cpu_fails_in_the_job_with_the_fix(tiny_gpt2: Path, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"train": write_records(tmp_path / "in" / "t.jsonl", SHAPES["text"]).parent})
    train = make_train(tiny_gpt2, eval_name=None, lora={"quantize": "4bit"}, max_steps=1)
    with pytest.raises(JobInputError, match=r"^train.lora.quantize: 4bit needs a CUDA GPU \(bitsandbytes\); this "
                                            r"process has cpu only. To fix: train on a CUDA GPU"):
        run_causal_lm(ctx, train, CheckpointSpec())
    assert not (tmp_path / "model").exists()


def test_qlora_on_a_lora_adapter_model_is_refused(tiny_gpt2: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)), LoraConfig(r=2, target_modules=["c_attn"]))
    model.save_pretrained(str(adapter))
    AutoTokenizer.from_pretrained(str(tiny_gpt2)).save_pretrained(str(adapter))
    with pytest.raises(JobInputError, match="is a LoRA adapter, which is merged into its base before training"):
        load_pretrained(str(adapter), shown="adapter", load_kwargs={"quantization_config": object()})


def test_undecided_gradient_checkpointing_is_off_on_cpu(tiny_gpt2: Path) -> None:
    from transformers import AutoModelForCausalLM

    train = make_train(tiny_gpt2)
    assert train.hyperparameters.gradient_checkpointing is None
    decided = memory_settings(train, AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)), "cpu")
    assert decided.hyperparameters.gradient_checkpointing is False
    chosen = make_train(tiny_gpt2, gradient_checkpointing=True)
    assert memory_settings(chosen, AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)), "cpu").hyperparameters.gradient_checkpointing is True
