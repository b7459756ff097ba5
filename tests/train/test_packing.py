"""Packing: a packed row gives the same logits (and loss) as its examples run alone; no cross-example attention."""

from __future__ import annotations

import pytest
import torch

from cloudtune.train.data import IGNORE, CausalLMCollator, block_causal_mask, pack

LENGTHS = [7, 3, 12, 5, 9, 1, 6]


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


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2-absolute-positions", "llama-rope"])
def test_packed_logits_equal_the_examples_run_alone(build, impl: str) -> None:
    model = build(impl)
    examples = _examples(64)
    packed = pack(examples, 24)
    assert len(packed) < len(examples)
    batch = CausalLMCollator(pad_token_id=0, attn_implementation=impl)(packed.examples)
    assert batch["attention_mask"].dim() == 4
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"]).logits
        seen = 0
        for row, item in enumerate(packed.examples):
            start = 0
            for n in item["seq_lens"]:
                ids = item["input_ids"][start:start + n]
                alone = model(input_ids=torch.tensor([ids])).logits[0]
                torch.testing.assert_close(out[row, start:start + n], alone, atol=1e-5, rtol=1e-5)
                start += n
                seen += 1
    assert seen == len(examples)
    assert int(batch["ct_num_tokens"]) == sum(LENGTHS)


def test_packed_loss_terms_equal_the_examples_alone() -> None:
    """Summed token losses of the packed batch == the sum over the examples run alone (first tokens unlabeled)."""
    model = _gpt2("sdpa")
    examples = _examples(64)
    packed = pack(examples, 24)
    batch = CausalLMCollator(0, "sdpa")(packed.examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
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


def test_block_mask_shape_and_values() -> None:
    m = block_causal_mask([[2, 1]], 4, eager=False)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    e = block_causal_mask([[2, 1]], 4, eager=True)[0, 0]
    assert torch.equal(e == 0, expected) and float(e.min()) == torch.finfo(torch.float32).min
