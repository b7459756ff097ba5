"""Packing: a batch of packed rows (position ids restarting per example, no attention mask) gives the same logits
(and loss) as its examples run alone, on eager and SDPA attention: transformers builds the block mask from the
position ids, so no token attends across examples. Both layouts are checked: rows (SDPA, eager) and the batch
flattened into one sequence (what flash-attention gets; its forward is run here through SDPA, as CPUs have no
flash kernels)."""

from __future__ import annotations

import pytest
import torch

from cloudtune.train.packing import IGNORE, CausalLMCollator, pack

LENGTHS = [7, 3, 12, 5, 9, 1, 6]


def _packed(examples: list[dict[str, list[int]]], max_len: int) -> list[dict[str, list[int]]]:
    import datasets

    return pack(datasets.Dataset.from_list(examples), max_len).to_list()


def _examples(vocab: int) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def _gpt2(impl: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2, attn_implementation=impl)
    return GPT2LMHeadModel(cfg).eval()


def _llama(impl: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, attn_implementation=impl)
    return LlamaForCausalLM(cfg).eval()


def _pieces(batch: dict, packed: list[dict]) -> list[tuple[int, int, int]]:
    """(row, start, length) of every example in the collated batch."""
    out = []
    if batch["input_ids"].shape[0] == 1 and len(packed) > 1:  # flattened
        start = 0
        for item in packed:
            for n in item["seq_lengths"]:
                out.append((0, start, n))
                start += n
        return out
    for row, item in enumerate(packed):
        start = 0
        for n in item["seq_lengths"]:
            out.append((row, start, n))
            start += n
    return out


@pytest.mark.parametrize("layout", ["rows", "flattened"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2-absolute-positions", "llama-rope"])
def test_packed_logits_equal_the_examples_run_alone(build, impl: str, layout: str) -> None:
    if layout == "flattened" and impl == "eager":
        pytest.skip("the flattened layout is flash-attention's; one attention implementation runs it here")
    model = build(impl)
    examples = _examples(64)
    packed = _packed(examples, 24)
    assert len(packed) < len(examples)
    batch = CausalLMCollator(pad_token_id=0, attn_implementation=impl if layout == "rows" else "flash_attention_2")(packed)
    assert "attention_mask" not in batch and batch["use_cache"] is False
    if layout == "rows":
        assert batch["input_ids"].shape == (len(packed), max(len(r["input_ids"]) for r in packed))
    else:
        assert batch["input_ids"].shape == (1, sum(LENGTHS)) and batch["cu_seq_lens_q"].tolist()[-1] == sum(LENGTHS)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=batch["use_cache"]).logits
        pieces = _pieces(batch, packed)
        for row, start, n in pieces:
            ids = batch["input_ids"][row, start:start + n]
            alone = model(input_ids=ids[None]).logits[0]
            torch.testing.assert_close(out[row, start:start + n], alone, atol=1e-5, rtol=1e-5)
            assert int(batch["labels"][row, start]) == IGNORE
    assert len(pieces) == len(examples)
    assert int(batch["ct_num_tokens"]) == sum(LENGTHS)


def test_packed_loss_terms_equal_the_examples_alone() -> None:
    """Summed token losses of the packed batch == the sum over the examples run alone (first tokens unlabeled)."""
    model = _gpt2("sdpa")
    examples = _examples(64)
    batch = CausalLMCollator(0, "sdpa")(_packed(examples, 24))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=batch["use_cache"]).logits
        labels = batch["labels"][:, 1:]
        packed_sum = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), labels.reshape(-1),
                                                       ignore_index=IGNORE, reduction="sum")
        alone_sum = 0.0
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            lg = model(input_ids=ids).logits
            alone_sum += float(torch.nn.functional.cross_entropy(lg[0, :-1], ids[0, 1:], reduction="sum")) if len(ex["input_ids"]) > 1 else 0.0
    assert float(packed_sum) == pytest.approx(alone_sum, rel=1e-5)
    assert int((labels != IGNORE).sum()) == sum(n - 1 for n in LENGTHS)


@pytest.mark.parametrize("impl", ["sdpa", "flash_attention_2"])
def test_fixed_shape_padding_is_its_own_example(impl: str) -> None:
    """PyTorch/XLA pads every row to max_seq_len: the padding has no loss and changes no logit."""
    model = _llama("sdpa")
    packed = _packed(_examples(64), 20)[:2]  # rows of <= 20 tokens, padded to 24
    free = CausalLMCollator(0, impl)(packed)
    fixed = CausalLMCollator(0, impl, pad_to=24)(packed)
    assert fixed["input_ids"].numel() == 48 and free["input_ids"].numel() < 48
    real = free["input_ids"].shape[1]
    assert int(fixed["ct_num_tokens"]) == int(free["ct_num_tokens"])
    with torch.no_grad():
        a = model(input_ids=free["input_ids"], position_ids=free["position_ids"], use_cache=False).logits
        b = model(input_ids=fixed["input_ids"], position_ids=fixed["position_ids"], use_cache=False).logits[:, :real]
        assert bool((fixed["labels"][:, real:] == IGNORE).all())
    keep = free["labels"] != IGNORE
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-5)
