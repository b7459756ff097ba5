"""What a saved model directory must hold, and the model's position limit, read from its files without torch.

`model_dir_problems(path, shown)` lists what would stop the recipes from using a local model directory: no or a
broken `config.json`, no weights (missing shards, a .safetensors file cut short), no tokenizer files, or a partial
tokenizer (a BPE vocabulary without its merges). `position_limit(config)` reads the longest sequence a model can take from its
`config.json` and says whether going past it is an error (learned absolute positions: the embedding lookup fails
with "index out of range") or only a warning (rotary, ALiBi or relative positions).

`check_tokenizer(tokenizer, shown)` refuses a loaded tokenizer that encodes text to nothing.

Used at plan time (cloudtune.preflight) and inside the job (the recipes), so both say the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.data.modelfiles import tokenizer_file_problems, weight_file_problem
from cloudtune.errors import JobInputError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# files that carry a vocabulary on their own
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
               "spm.model", "sentencepiece.model", "tekken.json", "vocab.model")
VOCAB_SUFFIXES = (".tiktoken",)
# tokenizers whose vocab.json needs merges.txt beside it (byte-level BPE)
BPE_FAMILIES = ("gpt2", "roberta", "bart", "qwen", "codegen", "bloom", "clip", "longformer", "led", "gpt_neox",
                "gptneox", "blenderbot", "deberta", "opt", "mpt", "starcoder", "falcon", "olmo", "phi")

POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length",
                 "max_seq_len")
NESTED_CONFIGS = ("text_config", "llm_config", "language_config")
# architectures with learned absolute position embeddings: a longer sequence fails (index out of range)
ABSOLUTE_POSITIONS = frozenset({
    "gpt2", "gpt_bigcode", "gpt_neo", "opt", "bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert",
    "albert", "bart", "mbart", "biogpt", "megatron-bert", "ernie", "mpnet", "layoutlm", "blenderbot",
    "blenderbot-small", "marian", "pegasus", "data2vec-text", "xmod", "roberta-prelayernorm", "nezha", "deberta",
})
# RoBERTa-style position ids start after the padding index: max_position_embeddings - pad_token_id - 1 usable
PADDING_OFFSET = frozenset({"roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod", "roberta-prelayernorm",
                            "longformer"})


@dataclass(frozen=True)
class PositionLimit:
    """The longest sequence a model takes: `limit` tokens, read from `key` of its config; `hard` when a longer one
    fails (learned absolute positions) rather than only leaving what the model was trained on."""

    limit: int
    key: str
    hard: bool


def read_config(path: Path, shown: str) -> tuple[dict[str, Any] | None, str | None]:
    """(config.json of model dir `path` as a dict, None) or (None, the problem), `path` named `shown`."""
    file = Path(path) / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, f"train.model: {shown}/config.json is not UTF-8 text; save it again with save_pretrained"
    except json.JSONDecodeError as exc:
        return None, (f"train.model: {shown}/config.json is not valid JSON (line {exc.lineno}: {exc.msg}); "
                      f"save it again with save_pretrained")
    if not isinstance(data, dict):
        return None, f"train.model: {shown}/config.json must hold a JSON object; save it again with save_pretrained"
    return data, None


def position_limit(config: dict[str, Any]) -> PositionLimit | None:
    """The model's position limit from its config dict (see `PositionLimit`), or None when the config names none."""
    model_type = str(config.get("model_type") or "")
    for nested in NESTED_CONFIGS:  # multimodal wrappers: the language model's own config
        if isinstance(config.get(nested), dict) and not any(isinstance(config.get(k), int) for k in POSITION_KEYS):
            return position_limit(config[nested])
    for key in POSITION_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            break
    else:
        return None
    hard = model_type in ABSOLUTE_POSITIONS
    if model_type == "deberta-v2" or model_type == "deberta":
        hard = bool(config.get("position_biased_input", model_type == "deberta"))
    elif not hard and config.get("position_embedding_type") == "absolute" and not _rotary(config):
        hard = True
    limit = value
    if model_type in PADDING_OFFSET:
        pad = config.get("pad_token_id")
        limit = value - (pad if isinstance(pad, int) else 1) - 1
    return PositionLimit(limit, key, hard)


def _rotary(config: dict[str, Any]) -> bool:
    return any(k in config for k in ("rope_theta", "rope_scaling", "rope_parameters", "rotary_dim", "rotary_pct"))


def is_adapter_dir(path: Path | str) -> bool:
    """Whether `path` is a directory holding a peft LoRA adapter (adapter_config.json) and no full weights (a merged
    LoRA output keeps its adapter in adapter/, beside full weights, and is a plain model)."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not any((path / w).is_file() for w in WEIGHT_FILES)


def _names(path: Path) -> set[str]:
    return {p.name for p in Path(path).iterdir() if p.is_file()}


def _tokenizer_problem(path: Path, shown: str, names: set[str], config: dict[str, Any] | None) -> str | None:
    if any(n in names for n in VOCAB_FILES) or any(n.endswith(VOCAB_SUFFIXES) for n in names):
        return None
    family = f"{(config or {}).get('model_type', '')} {_tokenizer_class(path)}".lower()
    if "vocab.json" in names and "merges.txt" in names:
        return None
    fix = ("save the tokenizer there (tokenizer.save_pretrained(dir)) or point train.model at the base model it "
           "was trained from")
    if "vocab.json" in names:
        if any(f in family for f in BPE_FAMILIES):
            return f"train.model: {shown} has vocab.json but no merges.txt (a BPE tokenizer needs both); {fix}"
        return None
    present = sorted(n for n in names if n in ("tokenizer_config.json", "special_tokens_map.json", "merges.txt"))
    what = f"only {', '.join(present)}, no vocabulary" if present else "no tokenizer files"
    return (f"train.model: {shown} has {what} (tokenizer.json, vocab.json + merges.txt, vocab.txt or a "
            f"SentencePiece .model); {fix}")


def _tokenizer_class(path: Path) -> str:
    try:
        data = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return ""
    return str(data.get("tokenizer_class") or "") if isinstance(data, dict) else ""


def _weights_problem(path: Path, shown: str, names: set[str]) -> str | None:
    full = any(n in names for n in WEIGHT_FILES)
    if "config.json" not in names or ("adapter_config.json" in names and not full):  # a peft adapter directory
        if not any(n in names for n in ADAPTER_WEIGHTS):
            return f"train.model: {shown} has adapter_config.json but no adapter weights (adapter_model.safetensors)"
        return None
    if not any(n in names for n in WEIGHT_FILES) and not any(n.endswith(".safetensors") for n in names):
        return (f"train.model: {shown} has config.json but no weights (model.safetensors, pytorch_model.bin or a "
                f"sharded index); save the model with save_pretrained, or point train.model at a full model")
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            try:
                shards = set(json.loads((Path(path) / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"train.model: {shown}/{index} is not a valid weight index; save the model again"
            missing = sorted(s for s in shards if s not in names)
            if missing:
                return (f"train.model: {shown}/{index} names {len(missing)} shard(s) that are not there: "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; copy every shard of the model")
    return None


MAX_HEADER = 100 << 20


def safetensors_problem(file: Path, shown: str) -> str | None:
    """Whether a .safetensors file is cut short (a partial copy or download): its header names the byte range of
    every tensor, so the file must be at least 8 + header + the last tensor's end. Reads the header only. An empty
    file, or one without tensors, is refused (from_pretrained would fail, or start from random weights)."""
    size = file.stat().st_size
    if size == 0:
        return f"train.model: {shown}/{file.name} is empty (0 bytes), so the model has no weights; copy or download the model again"
    damaged = f"train.model: {shown}/{file.name} is damaged or cut short"
    fix = "copy or download the model again"
    with open(file, "rb") as fh:
        head = fh.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER, size - 8):
            return f"{damaged} (no valid safetensors header); {fix}"
        try:
            header = json.loads(fh.read(length))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return f"{damaged} (its safetensors header does not parse); {fix}"
    if not any(k != "__metadata__" for k in header):
        return f"train.model: {shown}/{file.name} holds no tensors; copy or download the model again"
    expected = 8 + length + end
    if size < expected:
        return f"{damaged} (it holds {size:,} of its {expected:,} bytes); {fix}"
    return None


def model_dir_problems(path: Path, shown: str) -> list[str]:
    """One line per reason the saved model at `path` (a directory holding config.json or adapter_config.json),
    named `shown`, cannot be trained from. Empty when it looks complete."""
    names = _names(path)
    config, problem = read_config(path, shown)
    if problem:
        return [problem]
    problems = []
    if config is not None and not config.get("model_type"):
        problems.append(f"train.model: {shown}/config.json has no model_type, so transformers cannot tell the "
                        f"architecture; save the model with save_pretrained")
    checks = [_weights_problem(path, shown, names), _tokenizer_problem(path, shown, names, config)]
    checks += [safetensors_problem(Path(path) / n, shown) for n in sorted(names) if n.endswith(".safetensors")]
    checks += [weight_file_problem(Path(path) / n, shown) for n in sorted(names)
               if n.endswith((".bin", ".h5", ".msgpack")) and not n.startswith("training_args")]
    return problems + [c for c in checks if c] + tokenizer_file_problems(path, shown, names)


def max_seq_len_problem(config: dict[str, Any], max_seq_len: int, where: str) -> tuple[str | None, str | None]:
    """(error, warning) for `max_seq_len` against the limit in `config` (the model's config.json, read from
    `where`): an error for a hard limit, a warning for a soft one, (None, None) when it fits."""
    found = position_limit(config)
    if found is None or max_seq_len <= found.limit:
        return None, None
    text = (f"train.hyperparameters.max_seq_len: {max_seq_len} exceeds this model's maximum positions "
            f"{found.limit} ({found.key} in {where})")
    if found.hard:
        return f"{text}; set max_seq_len <= {found.limit}", None
    return None, f"{text}: longer sequences go past what the model was trained on"


def check_tokenizer(tokenizer: Any, shown: str) -> None:
    """A tokenizer that encodes text to nothing (transformers builds an empty one from a dir without vocabulary)
    would train on EOS alone with loss 0: refuse it."""
    probe = "the quick brown fox 0123"
    try:
        ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    except Exception as exc:  # noqa: BLE001 - a broken tokenizer fails in many ways
        raise JobInputError(f"train.model: the tokenizer of {shown} cannot encode text ({exc}); save a working "
                            f"tokenizer with the model or point train.model at the base model") from None
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(tokenizer) < 4 or not ids or all(i == unk for i in ids):
        raise JobInputError(f"train.model: the tokenizer of {shown} is empty (vocabulary of {len(tokenizer)}; it "
                            f"encodes text to nothing): the model dir has no usable tokenizer files; save the "
                            f"tokenizer there or point train.model at the base model")
