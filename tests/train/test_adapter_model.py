"""A LoRA adapter as `train.model`: the recipe loads its base (train.base_model, or a readable
base_model_name_or_path), applies the adapter and merges it; a base it cannot read is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.errors import JobInputError
from cloudtune.spec import LoraSpec, TrainSpec
from cloudtune.data.modeldir import is_adapter_dir
from cloudtune.train.flow import lora_output_for
from cloudtune.train.models import load_pretrained

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter(tiny_gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny GPT-2, saved as the recipe saves it (merge: false), with non-zero B matrices (a
    fresh adapter is the identity) and a base path that exists on no machine."""
    import torch

    from cloudtune.train.lora import apply_lora, save_lora

    tokenizer, model = load_pretrained(str(tiny_gpt2), shown="tiny")
    peft_model = apply_lora(model, LoraSpec(r=4), "causal-lm")
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    save_lora(peft_model, out, False, "/a/path/on/another/machine")
    tokenizer.save_pretrained(str(out))
    return out


def test_adapter_is_merged_onto_the_given_base(adapter: Path, tiny_gpt2: Path) -> None:
    import torch

    assert is_adapter_dir(str(adapter)) and not is_adapter_dir(str(tiny_gpt2))
    _, merged = load_pretrained(str(adapter), shown="job:lora", base=(str(tiny_gpt2), "tiny"))
    _, plain = load_pretrained(str(tiny_gpt2), shown="tiny")
    assert type(merged).__name__ == "GPT2LMHeadModel" and merged.ct_from_adapter  # a plain model, adapter merged in
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, merged.state_dict()[k])]
    assert changed and all("attn" in k or "mlp" in k for k in changed)


def test_an_unreadable_base_is_one_line(adapter: Path, tiny_gpt2: Path) -> None:
    with pytest.raises(JobInputError, match=r"whose base \(/a/path/on/another/machine\) cannot be read in this job: "
                                            r"set train.base_model"):
        load_pretrained(str(adapter), shown="job:lora")
    with pytest.raises(JobInputError, match="train.base_model is set, but train.model tiny is not a LoRA adapter"):
        load_pretrained(str(tiny_gpt2), shown="tiny", base=(str(tiny_gpt2), "tiny"))


def test_a_new_adapter_on_a_merged_model_is_saved_merged(adapter: Path, tiny_gpt2: Path) -> None:
    _, merged = load_pretrained(str(adapter), shown="job:lora", base=(str(tiny_gpt2), "tiny"))
    train = TrainSpec(model="model", lora=LoraSpec(r=4))
    assert lora_output_for(train, merged).lora.merge is True
    assert lora_output_for(TrainSpec(model="model"), merged).lora is None
    with pytest.raises(JobInputError, match="distributed: fsdp"):
        lora_output_for(TrainSpec(model="model", lora=LoraSpec(r=4), distributed="fsdp"), merged)
