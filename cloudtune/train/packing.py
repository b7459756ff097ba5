"""Packing and batches of the causal-LM recipe.

* `pack`: TRL's best-fit-decreasing `pack_dataset` of an encoded dataset into rows of at most `max_seq_len` tokens
  (`input_ids`, `labels`, `seq_lengths`); `pack_stream`: a stream packed greedily, in order.
* `CausalLMCollator`: rows -> a batch. Packed rows get `position_ids` restarting at 0 per example and no attention
  mask (transformers' `DataCollatorWithFlattening` convention): flash-attention gets the batch flattened into one
  sequence and the varlen boundaries; SDPA and eager keep rows and get the block-diagonal causal mask transformers
  builds from the position ids. No token attends across examples.
"""

from __future__ import annotations

from typing import Any, Iterator

from cloudtune.data.encode import IGNORE

MAP_BATCH = 1000  # a stream is packed in groups of this many examples
PACK_BATCH = 10_000  # examples packed together (best fit within each group)


def pack(ds: Any, max_len: int) -> Any:
    """Best-fit-decreasing packing (TRL's `pack_dataset`, strategy bfd) of an encoded dataset into rows of at most
    `max_len` tokens with their examples' `seq_lengths`, best fit within groups of `PACK_BATCH` examples."""
    from trl import pack_dataset

    return pack_dataset(ds.select_columns(["input_ids", "labels"]), max_len, strategy="bfd",
                        map_kwargs={"batch_size": PACK_BATCH})


def _greedy(batch: dict[str, list], max_len: int) -> dict[str, list]:
    rows: dict[str, list] = {"input_ids": [], "labels": [], "seq_lengths": []}
    ids: list[int] = []
    labels: list[int] = []
    lens: list[int] = []
    for x, y in zip(batch["input_ids"], batch["labels"]):
        if lens and len(ids) + len(x) > max_len:
            rows["input_ids"].append(ids)
            rows["labels"].append(labels)
            rows["seq_lengths"].append(lens)
            ids, labels, lens = [], [], []
        ids, labels, lens = ids + list(x), labels + list(y), lens + [len(x)]
    if lens:
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["seq_lengths"].append(lens)
    return rows


def pack_stream(ds: Any, max_len: int) -> Any:
    """Greedy packing of a stream, in order: examples fill a row until the next one does not fit (rows restart at
    each group of `MAP_BATCH` examples, so the packing of a position never depends on what was read before it)."""
    return ds.select_columns(["input_ids", "labels"]).map(_greedy, batched=True, batch_size=MAP_BATCH,
                                                           fn_kwargs={"max_len": max_len})


def pad_count(lengths: Iterator[int] | list[int], batch_size: int) -> tuple[int, int]:
    """(pad tokens, total tokens) when rows of these lengths are batched in order and padded to each batch's
    longest row."""
    lengths = list(lengths)
    pads = total = 0
    for b in range(0, len(lengths), batch_size):
        chunk = lengths[b:b + batch_size]
        total += max(chunk) * len(chunk)
        pads += max(chunk) * len(chunk) - sum(chunk)
    return pads, total


class CausalLMCollator:
    """Rows -> a batch. Unpacked rows (`input_ids`, optional `labels`): padded to the batch's longest row (or to
    `pad_to`, fixed shapes for PyTorch/XLA) with an `attention_mask`; labels -100 on padding.

    Packed rows (with `seq_lengths`) carry `position_ids` restarting at 0 for every example and no attention mask
    (transformers' `DataCollatorWithFlattening` convention): with a flash-attention implementation the batch is
    flattened into one sequence of shape (1, total tokens), no padding, and the varlen kernels get the example
    boundaries (`cu_seq_lens_*`, `max_length_*`); with SDPA or eager the rows stay rows (padded; the padding is one
    more example) and transformers derives the block-diagonal causal mask from the position ids, per row, so
    attention costs what it costs unpacked (flattening would make it quadratic in the whole batch's tokens).
    `use_cache=False`: transformers reads packed sequences from position ids only when no KV cache is built. The
    first token of each example has no loss (it would be predicted from the previous example). `ct_num_tokens`
    (the real tokens, for throughput) is removed by the recipe's Trainer before the forward pass.
    """

    def __init__(self, pad_token_id: int, attn_implementation: str | None = "sdpa", pad_to: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.flash = "flash" in str(attn_implementation or "")
        self.pad_to = pad_to  # fixed shapes (PyTorch/XLA): every row padded to this length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        packed = any("seq_lengths" in f for f in features)
        if packed and self.flash:
            return self._flattened(features)
        import torch

        longest = max([len(f["input_ids"]) for f in features] + [self.pad_to or 0])
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for row, f in enumerate(features):
            ids = f["input_ids"]
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            labels[row, : len(ids)] = torch.as_tensor(f.get("labels", ids), dtype=torch.long)
            attention[row, : len(ids)] = 1
        if not packed:
            return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        position_ids = torch.stack([_positions([int(x) for x in f.get("seq_lengths") or [len(f["input_ids"])]], longest)
                                    for f in features])
        labels[position_ids == 0] = IGNORE
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "use_cache": False,
                "ct_num_tokens": attention.sum()}

    def _flattened(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        labels = [torch.as_tensor(f.get("labels", f["input_ids"]), dtype=torch.long) for f in features]
        lengths = [int(n) for f in features for n in (f.get("seq_lengths") or [len(f["input_ids"])])]
        real = sum(lengths)
        total = max(real, len(features) * self.pad_to) if self.pad_to else real
        position_ids = _positions(lengths, total)
        if total > real:  # fixed shapes: the padding is one more example, which no loss reads
            ids.append(torch.full((total - real,), self.pad_token_id, dtype=torch.long))
            labels.append(torch.full((total - real,), IGNORE, dtype=torch.long))
            lengths.append(total - real)
        flat_labels = torch.cat(labels)
        flat_labels[position_ids == 0] = IGNORE
        cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
        return {"input_ids": torch.cat(ids)[None], "position_ids": position_ids[None], "labels": flat_labels[None],
                "use_cache": False, "ct_num_tokens": torch.tensor(real), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                "max_length_q": max(lengths), "max_length_k": max(lengths)}


def _positions(lengths: list[int], total: int) -> Any:
    """Position ids of examples of `lengths` laid end to end, restarting at 0 for each; the rest up to `total`
    (padding) numbered as one more example."""
    import torch

    if total > sum(lengths):
        lengths = lengths + [total - sum(lengths)]
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    return torch.arange(total) - torch.repeat_interleave(starts, torch.tensor(lengths))
