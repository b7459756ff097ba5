"""The causal-LM training data on 🤗 Datasets: load, tokenise once, pack, collate.

* Load: each input (a file, or a directory of JSONL / JSON / CSV / Parquet / Arrow / .txt files, or a directory
  written by `Dataset.save_to_disk`) through `datasets.load_dataset` (memory-mapped Arrow in the datasets cache),
  or as an `IterableDataset` with `train.data.streaming` (nothing converted to disk). A file 🤗 Datasets cannot read
  is read again by `cloudtune.data.records`, whose error names the file, the line and the field.
* Encode: one batched `map` (in several processes for large data; under torchrun the node's first process maps
  and writes the cache, the others read it). TRL's shapes: `text` (loss on every token), `prompt` + `completion`
  (plain or as message lists; loss on the completion), `messages` (+ `tools`; loss on the assistant turns, each
  conversation rendered once: `cloudtune.data.chat`), encoded by `cloudtune.data.encode` (torch-free, shared with the
  plan-time checks); an error in a record names its file and line.
* Pack (`train.data.packing`) and collate: `cloudtune.train.packing`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say
from cloudtune.data.encode import WHERE, encode_batch, need_template
from cloudtune.data.records import (NO_RECORDS_FIX, data_files, detect_format, locate, read_file_records, saved_dataset,
                                    shown_name)
from cloudtune.errors import JobInputError
from cloudtune.train.packing import pack, pack_stream, pad_count

HUB_PREFIX = "hf:"  # train.data.train / eval naming a Hub dataset instead of an input: hf:ORG/NAME[:SPLIT]
MAP_BATCH = 1000
PARALLEL_FROM = 20_000  # records from which tokenising uses several processes
PROGRESS_FROM = 50_000  # records from which tokenising prints its progress every 10%
_BUILDERS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet",
             ".pq": "parquet", ".arrow": "arrow", ".txt": "text"}


@dataclass
class Part:
    """A run of consecutive data files of one input read by one 🤗 Datasets builder."""

    builder: str
    files: list[tuple[Path, str]] = field(default_factory=list)  # (path, the user's name for it)


def _builder(path: Path) -> str:
    if path.suffix.lower() in _BUILDERS:
        return _BUILDERS[path.suffix.lower()]
    with open(path, "rb") as fh:  # an explicitly named file with another suffix: sniff it
        head = fh.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"[", b"{") else "text"


def parts(path: Path, shown: str | None) -> list[Part]:
    """The input's data files (see `records.data_files`), grouped into runs read by the same builder."""
    out: list[Part] = []
    for file in data_files(path, shown):
        builder = _builder(file)
        if not out or out[-1].builder != builder:
            out.append(Part(builder))
        out[-1].files.append((file, shown_name(file, path, shown)))
    return out


def _saved_dataset(path: Path) -> bool:
    """A directory written by save_to_disk, a Dataset or a DatasetDict (cloudtune.data.records.saved_dataset)."""
    return saved_dataset(path) is not None


def _read_error(part: Part, text_field: str, exc: Exception) -> JobInputError:
    """The error for a part 🤗 Datasets could not read: the records reader's own (file, line, fix), else the first
    record whose field types differ from the records before it, else the library's message."""
    for path, shown in part.files:
        records = read_file_records(path, text_field, shown)
        types: dict[str, str] = {}
        for where, rec in records:
            for key, value in (rec.items() if isinstance(rec, dict) else ()):
                kind = type(value).__name__
                if value is not None and types.setdefault(key, kind) != kind:
                    raise_at = (f"{where}: field {key!r} is a {kind} here and a {types[key]} in the records before; "
                                f"give the field one type in every record")
                    return JobInputError(raise_at)
    if not any(read_file_records(path, text_field, shown) for path, shown in part.files):
        return JobInputError(f"data input {part.files[0][1]} holds no records. {NO_RECORDS_FIX}")
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return JobInputError(f"{part.files[0][1]}: 🤗 Datasets cannot read it as {part.builder}: {message}")


def _csv_features(path: Path) -> Any:
    import csv

    import datasets

    with open(path, encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    return datasets.Features({name: datasets.Value("string") for name in header})


def load_part(part: Part, text_field: str, streaming: bool = False) -> Any:
    """The part as a `datasets.Dataset` (or `IterableDataset` when `streaming`); .txt lines become `text_field`
    records (blank lines left out), CSV cells stay text."""
    import datasets

    kwargs: dict[str, Any] = {}
    try:
        if part.builder == "csv":  # every cell as the text it is (no number or NaN guessing), as the records reader
            kwargs = {"features": _csv_features(part.files[0][0]), "keep_default_na": False}
        ds = datasets.load_dataset(part.builder, data_files=[str(p) for p, _ in part.files], split="train",
                                   streaming=streaming, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pyarrow / pandas / datasets raise many types for a bad file
        raise _read_error(part, text_field, exc) from None
    if part.builder == "text":
        ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
        if text_field != "text":
            ds = ds.rename_column("text", text_field)
    return ds


def _load_run(part: Part, text_field: str, streaming: bool) -> list[tuple[Part, Any]]:
    """[(part, dataset)]: the run of files in one load; when that fails (files whose columns differ cannot share
    one Arrow schema), each file on its own, so the error, if any, names its file."""
    try:
        return [(part, load_part(part, text_field, streaming))]
    except JobInputError:
        if len(part.files) == 1:
            raise
    singles = [Part(part.builder, [f]) for f in part.files]
    return [(one, load_part(one, text_field, streaming)) for one in singles]


def _fill_where(message: str, indices: list[int], part: Part, text_field: str, streaming: bool) -> str:
    """Replace the `WHERE` mark of a batch-local record index by the record's `file, line N`."""
    import re

    match = re.search("\x00(\\d+)\x00", message)
    if match is None:
        return message
    index = indices[int(match.group(1))]
    where = (f"{part.files[0][1]}, record {index + 1}" if streaming or part.builder in ("saved", "hub")
             else locate(part.files, index, text_field))  # a stream is not read twice to count lines
    return message.replace(match.group(0), where)


def _map_batch(batch: dict[str, list], indices: list[int], fmt: str, data: Any, tokenizer: Any, max_len: int,
               part: Part, streaming: bool, total: int | None = None) -> dict[str, list]:
    try:
        out = encode_batch(batch, fmt, data, tokenizer, max_len)
    except JobInputError as exc:
        raise JobInputError(_fill_where(str(exc), indices, part, data.text_field, streaming)) from None
    if total and indices:
        tokenising_progress(indices[0], indices[-1] + 1, total, part)
    return out


def tokenising_progress(start: int, end: int, total: int, part: Part) -> None:
    """`tokenising: N% (done of total records)` each time a batch crosses a tenth of a large part (printed by
    whichever map process holds that record, rank 0 only)."""
    if total < PROGRESS_FROM:
        return
    for tenth in range(1, 10):
        mark = total * tenth // 10
        if start < mark <= end:
            say(f"tokenising {part.files[0][1]}{' ...' if len(part.files) > 1 else ''}: {tenth * 10}% "
                f"({mark:,} of {total:,} records)")


def first_record(ds: Any, part: Part) -> dict[str, Any]:
    """The first record of a part (its format decides the shape of the input); JobInputError when it is empty."""
    import datasets

    rows = ds.take(1) if isinstance(ds, datasets.IterableDataset) else ds.select(range(min(1, len(ds))))
    for rec in rows:
        return dict(rec)
    raise JobInputError(f"data input {part.files[0][1]} holds no records. {NO_RECORDS_FIX}")


def _num_proc(ds: Any) -> int | None:
    """Processes for tokenising: several for large data (up to the CPUs, at most 8), else this one."""
    rows = getattr(ds, "num_rows", None)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if rows is None or rows < PARALLEL_FROM or cpus < 2:
        return None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the forked workers tokenise one batch each
    return min(8, cpus, max(1, rows // (PARALLEL_FROM // 4)))


def encode_part(ds: Any, part: Part, fmt: str, data: Any, tokenizer: Any, max_len: int, streaming: bool) -> Any:
    """The part's records encoded (see `encode_batch`); columns `input_ids`, `labels`, `length`."""
    import datasets

    kwargs: dict[str, Any] = {} if streaming else {"num_proc": _num_proc(ds), "desc": None}
    # int32 token ids and labels: half the cache and memory of the default int64 (vocabularies are < 2**31)
    kwargs["features"] = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                            "labels": datasets.Sequence(datasets.Value("int32")),
                                            "length": datasets.Value("int32")})
    return ds.map(_map_batch, batched=True, batch_size=MAP_BATCH, with_indices=True, remove_columns=ds.column_names,
                  fn_kwargs={"fmt": fmt, "data": data, "tokenizer": tokenizer, "max_len": max_len, "part": part,
                             "streaming": streaming, "total": getattr(ds, "num_rows", None)}, **kwargs)


def local_main_first() -> Any:
    """A context in which this node's first process runs first (it maps and writes the datasets cache; the others
    then read it): accelerate's `local_main_process_first` under torchrun, a no-op in one process."""
    import contextlib

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    import torch
    from accelerate import PartialState

    # the same backend as the Trainer's arguments (cloudtune.train.trainer): NCCL on CUDA, gloo on CPU
    return PartialState(backend=None if torch.cuda.is_available() else "gloo").local_main_process_first()


@dataclass
class Encoded:
    """An input encoded: the dataset (map-style or iterable), its format and what was dropped."""

    dataset: Any
    fmt: str
    examples: int | None  # None for a stream
    dropped: int


def encode_input(path: Path, shown: str | None, data: Any, tokenizer: Any, max_len: int, *,
                 fmt: str | None = None, streaming: bool = False) -> Encoded:
    """Load and encode one input (see module). `fmt`: the format (the train input's, for eval); None = detect."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a file it cannot read is reported once, by `_read_error`
    path = Path(path)
    if str(path).startswith(HUB_PREFIX):
        loaded = [(Part("hub", [(path, str(path))]), load_hub(str(path), streaming))]
    elif _saved_dataset(path):
        loaded = [(Part("saved", [(path, shown or str(path))]), _load_saved(path, shown, streaming))]
    else:
        loaded = [pair for part in parts(path, shown) for pair in _load_run(part, data.text_field, streaming)]
    fmt = fmt or _format(loaded[0][0], loaded[0][1], data)
    if fmt == "chat" or (fmt == "instruction" and _conversational(loaded[0][1], loaded[0][0], data)):
        need_template(tokenizer, data)
    encoded = [encode_part(ds, part, fmt, data, tokenizer, max_len, streaming) for part, ds in loaded]
    ds = encoded[0] if len(encoded) == 1 else datasets.concatenate_datasets(encoded)
    if streaming:
        return Encoded(ds.filter(lambda b: [n > 0 for n in b["length"]], batched=True), fmt, None, 0)
    import numpy as np

    lengths = np.asarray(ds.with_format("numpy")["length"][:])  # [:] reads the column at once, not row by row
    dropped = int((lengths == 0).sum())
    if dropped:
        ds = ds.filter(lambda b: [n > 0 for n in b["length"]], batched=True)
    if len(ds) == 0:
        raise JobInputError(
            f"no example of {shown or path} has a token to learn from after tokenisation and truncation to "
            f"max_seq_len={max_len} ({dropped} dropped); raise train.hyperparameters.max_seq_len or shorten the prompts")
    return Encoded(ds, fmt, len(ds), dropped)


def _format(part: Part, ds: Any, data: Any) -> str:
    """The format of the input from its first record; when it cannot be told, the records reader's own error on
    the first file comes first (e.g. a ';'-separated CSV), as it names the problem better."""
    try:
        return detect_format(first_record(ds, part), data, f"{part.files[0][1]}, line 1")
    except JobInputError:
        if part.builder not in ("saved", "hub"):
            read_file_records(part.files[0][0], data.text_field, part.files[0][1])
        raise


def load_hub(source: str, streaming: bool) -> Any:
    """A Hub dataset named `hf:ORG/NAME[:SPLIT]` (split `train` when not given), read where the job has network (or
    from the datasets cache). JobInputError with the library's message and the fix when it cannot be loaded."""
    import datasets

    repo, _, split = source[len(HUB_PREFIX):].partition(":")
    try:
        return datasets.load_dataset(repo, split=split or "train", streaming=streaming)
    except Exception as exc:  # noqa: BLE001 - offline, not found, gated, no such split: many types
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise JobInputError(f"{source}: the Hub dataset cannot be loaded: {message}; the job needs network access to "
                            f"the Hugging Face Hub (and HF_TOKEN as a secret for a gated or private dataset), or "
                            f"upload the data and name it as an input") from None


def _load_saved(path: Path, shown: str | None, streaming: bool) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise JobInputError(f"{shown or path}: a saved 🤗 dataset that cannot be loaded: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise JobInputError(f"{shown or path}: a saved DatasetDict without a 'train' split (splits: "
                                f"{', '.join(ds)}); save the split to train on")
        ds = ds["train"]
    return ds.to_iterable_dataset() if streaming else ds


def _conversational(ds: Any, part: Part, data: Any) -> bool:
    rec = first_record(ds, part)
    return not isinstance(rec.get(data.prompt_field), str)


def prepare_lm_data(inputs: dict[str, Path], shown: dict[str, str | None], train: Any,
                    tokenizer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load, encode (and pack) the train and eval inputs (`inputs`: name -> local path; `shown`: name -> the
    user's name for it). Returns (train dataset, eval dataset or None, data_info for the model card and metrics).
    The node's first process maps first (see `local_main_first`)."""
    import time

    data, hp = train.data, train.hyperparameters
    started = time.monotonic()
    with local_main_first():
        enc = encode_input(inputs.get(data.train, Path(data.train)), shown.get(data.train), data, tokenizer, hp.max_seq_len,
                           streaming=data.streaming)
        info: dict[str, Any] = {"format": enc.fmt, "train_examples": enc.examples, "train_dropped": enc.dropped,
                                "train_input": data.train, "eval_input": data.eval, "streaming": data.streaming}
        if enc.dropped:
            say(f"warning: {enc.dropped} training example(s) dropped: no completion/assistant token left within "
                f"max_seq_len={hp.max_seq_len}")
        eval_ds = None
        if data.eval is not None:
            ev = encode_input(inputs.get(data.eval, Path(data.eval)), shown.get(data.eval), data, tokenizer, hp.max_seq_len, fmt=enc.fmt)
            eval_ds = ev.dataset.select_columns(["input_ids", "labels"])
            info["eval_examples"] = ev.examples
            if ev.dropped:
                say(f"warning: {ev.dropped} eval example(s) dropped: nothing to score within max_seq_len={hp.max_seq_len}")
        train_ds = enc.dataset
        if data.packing:
            train_ds = _packed(train_ds, hp, info, data.streaming)
        elif not data.streaming:
            train_ds = train_ds.select_columns(["input_ids", "labels"])
    info["prepare_seconds"] = round(time.monotonic() - started, 3)
    return train_ds, eval_ds, info


def _packed(ds: Any, hp: Any, info: dict[str, Any], streaming: bool) -> Any:
    if streaming:
        say(f"packing: the stream is packed greedily in order into rows of <= {hp.max_seq_len} tokens")
        return pack_stream(ds, hp.max_seq_len)
    import numpy as np

    lengths = np.asarray(ds.with_format("numpy")["length"][:]).tolist()  # [:]: the column at once, not row by row
    packed = pack(ds, hp.max_seq_len)
    rows = [sum(x) for x in packed.with_format(None)["seq_lengths"][:]]
    before, total = pad_count(lengths, hp.batch_size)
    after, packed_total = pad_count(rows, hp.batch_size)  # rows padded per batch; none when flattened (flash)
    info.update({"packed_rows": len(packed), "pad_tokens_unpacked": before, "pad_tokens_packed": after,
                 "tokens_unpacked": total, "tokens_packed": packed_total})
    say(f"packing: {len(lengths)} examples -> {len(packed)} rows of <= {hp.max_seq_len} tokens; pad tokens per "
        f"epoch {before} -> {after} (0 with flash-attention, which gets each batch as one sequence)")
    return packed

