"""LoRA seq-classification: the model card's own loading snippet gives back the trained classifier, with its label
count and names, a pad token (batches of several rows) and the trained head, for 2 and 3 labels, for a head of one
new module (GPT-2 `score`) and of two (DistilBERT `pre_classifier` + `classifier`). The card and the adapter name
the base model as the user gave it, never the container's copy.

Heads: GPT-2's `score` (peft's default modules_to_save), DistilBERT's `pre_classifier` + `classifier`, and a BERT
saved without its pooler, whose new `pooler` peft's defaults would leave random at every reload."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from cloudtune.spec import CheckpointSpec
from cloudtune.train import run_recipe

from .conftest import make_ctx, make_train, write_records

LABELS = ["credit", "other", "refund"]
WORDS = {"credit": "the boat sails north", "other": "numbers like 1 2 3 appear", "refund": "roast the beans fast"}
BATCH = ["the boat sails north at dawn", "a small model", "roast the beans until the first crack then cool them"]


def make_tiny_encoder(path: Path, arch: str) -> Path:
    """A 1-layer DistilBERT, or BERT saved without its pooler, base model only (no head), with a tiny WordPiece
    tokenizer; built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp.train_from_iterator(list(WORDS.values()) * 4 + BATCH * 4,
                           trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials, show_progress=False))
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    if arch == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                                 max_position_embeddings=64, pad_token_id=tok.pad_token_id))
    else:
        model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id),
                          add_pooling_layer=False)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {arch: make_tiny_encoder(root / arch, arch) for arch in ("distilbert", "bert-no-pooler")}


def card_snippet(model_dir: Path) -> dict[str, Any]:
    """Run the model card's loading code, as a user would paste it, against `model_dir`."""
    card = (model_dir / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card.split("## Loading", 1)[1], re.S).group(1)
    namespace: dict[str, Any] = {}
    exec(code.replace("path/to/this/dir", str(model_dir)), namespace)  # noqa: S102 - our own card
    return namespace


def logits(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def train_lora_classifier(base: Path, tmp_path: Path, n_labels: int) -> tuple[Path, str]:
    """Train through the recipe with the model as an input (a container copy), named in the spec by `base`."""
    container_model = tmp_path / "container/model"
    shutil.copytree(base, container_model)
    rows = [{"text": f"{WORDS[lab]} {i}", "label": lab} for i in range(8) for lab in LABELS[:n_labels]]
    train_dir = write_records(tmp_path / "container/train/train.csv", rows).parent
    ctx = make_ctx(tmp_path, {"train": train_dir, "model": container_model})
    ctx = dataclasses.replace(ctx, job={"sources": {"train": "data/train.csv", "model": str(base)}})
    spec = make_train("model", task="seq-classification", eval_name=None, lora={"r": 4, "alpha": 8},
                      max_steps=3, batch_size=8, learning_rate=1e-2)
    run_recipe(ctx, spec, CheckpointSpec(every_steps=100, keep=1))
    return ctx.model_dir, str(container_model)


@pytest.mark.slow
@pytest.mark.parametrize("arch, n_labels", [("gpt2", 2), ("gpt2", 3), ("distilbert", 3), ("bert-no-pooler", 2)])
def test_card_snippet_reloads_the_trained_classifier(arch: str, n_labels: int, tiny_gpt2: Path,
                                                     tiny_encoders: dict[str, Path], tmp_path: Path) -> None:
    base = tiny_gpt2 if arch == "gpt2" else tiny_encoders[arch]
    model_dir, container_copy = train_lora_classifier(base, tmp_path, n_labels)
    assert (model_dir / "config.json").is_file() and (model_dir / "adapter_config.json").is_file()

    torch.manual_seed(1)
    first = card_snippet(model_dir)
    model, tokenizer = first["model"], first["tokenizer"]
    assert model.config.num_labels == n_labels
    assert model.config.id2label == dict(enumerate(LABELS[:n_labels]))
    assert model.config.label2id == {name: i for i, name in enumerate(LABELS[:n_labels])}
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    batch = logits(model, tokenizer, BATCH)  # a batch of rows of different lengths
    assert batch.shape == (3, n_labels)
    for row, text in enumerate(BATCH):  # padding changes nothing: each row as it scores alone
        assert torch.allclose(batch[row], logits(model, tokenizer, [text])[0], atol=1e-5)

    torch.manual_seed(2)  # a head initialised afresh would differ: the trained one is restored
    again = card_snippet(model_dir)
    assert torch.equal(logits(again["model"], again["tokenizer"], BATCH), batch)

    import json

    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base)  # the user's model, not the container's copy
    card = (model_dir / "README.md").read_text()
    assert f"# Fine-tuned {base}" in card and container_copy not in card
    assert "base_model:" not in card  # a local path is no Hub id: the Hub refuses it as card metadata
    heads = {"gpt2": {"score"}, "distilbert": {"pre_classifier", "classifier"}, "bert-no-pooler": {"pooler", "classifier"}}
    assert heads[arch] <= set(adapter["modules_to_save"])
