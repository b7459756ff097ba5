"""What a model dir's weight and tokenizer files hold, read from their first bytes (and, for the tokenizer's JSON
files, parsed), without torch: an empty weights file, an error page or a text file saved under a weights name, and
tokenizer files that are not what their names say, each refused at plan time with the file and the fix, instead of
failing in the job at `from_pretrained` (or, for an empty safetensors file, loading random weights).

File signatures: a PyTorch checkpoint (torch.save) is a zip archive (`PK\\x03\\x04`, torch >= 1.6) or a pickle
(protocol byte `\\x80`); HDF5 (tf_model.h5) starts `\\x89HDF\\r\\n\\x1a\\n`; safetensors is checked by
cloudtune.data.modeldir.safetensors_problem; a SentencePiece model is a serialized ModelProto (binary protobuf),
so text (an HTML error page, JSON) in its place is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

SIGNATURES = {".bin": (b"PK\x03\x04", b"\x80"), ".pt": (b"PK\x03\x04", b"\x80"), ".h5": (b"\x89HDF\r\n\x1a\n",)}
# tokenizer files that are JSON objects
JSON_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "tekken.json")
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "spm.model",
                       "sentencepiece.model", "vocab.model")
TEXT_TOKENIZER_FILES = ("vocab.txt", "merges.txt")
MAX_JSON_BYTES = 256 << 20  # parsed whole up to this size (the largest tokenizer.json files are ~30 MB)
FIX = "copy or download the model again, or save it with save_pretrained"


def _head(file: Path, n: int = 16) -> bytes:
    with open(file, "rb") as fh:
        return fh.read(n)


def weight_file_problem(file: Path, shown: str) -> str | None:
    """Why the weights file `file` (not .safetensors) cannot hold a model: empty, or not of its format."""
    size = file.stat().st_size
    if size == 0:
        return f"train.model: {shown}/{file.name} is empty (0 bytes), so the model has no weights; {FIX}"
    signatures = SIGNATURES.get(file.suffix.lower())
    if signatures and not _head(file).startswith(signatures):
        kind = "an HDF5 file" if file.suffix.lower() == ".h5" else "a PyTorch checkpoint (torch.save)"
        return f"train.model: {shown}/{file.name} is not {kind} ({_looks_like(file)}); {FIX}"
    return None


def _looks_like(file: Path) -> str:
    head = _head(file, 64).lstrip()
    if head[:1] == b"<":
        return "it holds HTML or XML text, e.g. an error page saved in its place"
    if head[:1] in (b"{", b"["):
        return "it holds JSON text"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer: run git lfs pull"
    return "its first bytes are not that format's signature"


def _json_problem(file: Path, shown: str) -> str | None:
    size = file.stat().st_size
    where = f"train.model: {shown}/{file.name}"
    if size == 0:
        return f"{where} is empty (0 bytes); {FIX}"
    if size > MAX_JSON_BYTES:
        return None if _head(file, 64).lstrip()[:1] == b"{" else f"{where} is not a JSON object ({_looks_like(file)}); {FIX}"
    try:
        data = json.loads(file.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        return f"{where} is not UTF-8 text ({_looks_like(file)}); {FIX}"
    except json.JSONDecodeError as exc:
        hint = _looks_like(file)
        return f"{where} is not valid JSON (line {exc.lineno}: {exc.msg}; {hint}); {FIX}"
    if not isinstance(data, dict):
        return f"{where} must hold a JSON object, got {type(data).__name__}; {FIX}"
    if file.name == "tokenizer.json" and not isinstance(data.get("model"), dict):
        return f"{where} has no tokenizer model (its \"model\" object), so it is not a tokenizers file; {FIX}"
    return None


def tokenizer_file_problems(path: Path, shown: str, names: set[str]) -> list[str]:
    """One line per tokenizer file in the model dir `path` (named `shown`) that is not what its name says: JSON
    files that do not parse (or a tokenizer.json without its model), empty or non-UTF-8 vocab.txt / merges.txt,
    an empty SentencePiece model or text in its place."""
    problems = []
    for name in sorted(names):
        file = Path(path) / name
        if name in JSON_TOKENIZER_FILES:
            problem = _json_problem(file, shown)
        elif name in TEXT_TOKENIZER_FILES:
            problem = _text_problem(file, shown)
        elif name in SENTENCEPIECE_FILES:
            problem = _sentencepiece_problem(file, shown)
        else:
            continue
        if problem:
            problems.append(problem)
    return problems


def _text_problem(file: Path, shown: str) -> str | None:
    where = f"train.model: {shown}/{file.name}"
    if file.stat().st_size == 0:
        return f"{where} is empty (0 bytes); {FIX}"
    head = _head(file, 1 << 16)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a character cut by the read's end
            return f"{where} is not UTF-8 text; {FIX}"
    if head.lstrip()[:1] == b"<":
        return f"{where} holds HTML or XML text, e.g. an error page saved in its place; {FIX}"
    return None


def _sentencepiece_problem(file: Path, shown: str) -> str | None:
    where = f"train.model: {shown}/{file.name}"
    if file.stat().st_size == 0:
        return f"{where} is empty (0 bytes); {FIX}"
    head = _head(file, 64).lstrip()
    if head[:1] in (b"<", b"{", b"[") or head.startswith(b"version https://git-lfs"):
        return f"{where} is not a SentencePiece model ({_looks_like(file)}); {FIX}"
    return None
