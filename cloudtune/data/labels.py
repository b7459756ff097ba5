"""Labels of the seq-classification data, torch-free: how label values map to ids (`label_mapping`) and the id of one
record's label (`label_id`). The plan-time checks (`cloudtune.preflight`) and the recipe
(`cloudtune.train.classification`) use the same rules, so both refuse the same records with the same line.

Labels are names (strings: the sorted distinct names become ids 0..n-1; or the order given by `train.data.labels`) or
integer ids (0..n-1).
"""

from __future__ import annotations

from typing import Any

from cloudtune.errors import JobInputError


def integer_label(value: Any) -> int | None:
    """`value` as an integer label id when it is one (an int, an integral float, a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def label_mapping(values: list[tuple[str, Any]], names: list[str] | None) -> tuple[list[str] | None, dict[Any, int], int]:
    """Decide how labels map to ids from the training labels `[(where, value)]`.

    Returns (label names or None for numeric ids, value -> id for the names, number of labels).
    """
    if names is not None:
        return list(names), {n: i for i, n in enumerate(names)}, len(names)
    ints = [integer_label(v) for _, v in values]
    if all(i is not None for i in ints):
        bad = [(w, v) for (w, v), i in zip(values, ints) if i is not None and i < 0]
        if bad:
            raise JobInputError(f"{bad[0][0]}: numeric label {bad[0][1]!r} must be an id >= 0 (or use label names)")
        n = max(i for i in ints if i is not None) + 1
        if n < 2:
            raise JobInputError("seq-classification needs at least two labels; the training data has only label 0")
        return None, {}, n
    non_str = [(w, v) for w, v in values if not isinstance(v, str)]
    if non_str:
        raise JobInputError(f"{non_str[0][0]}: label {non_str[0][1]!r} mixes with named labels; use either names or integer ids")
    _check_names(values, ints)
    found = sorted({v for _, v in values})
    if len(found) < 2:
        raise JobInputError(f"seq-classification needs at least two labels; the training data has only {found}")
    return found, {n: i for i, n in enumerate(found)}, len(found)


def _check_names(values: list[tuple[str, Any]], ints: list[int | None]) -> None:
    """Named labels that would quietly become classes of their own: an empty (or blank) label, and digits among
    names (`"0"` beside `"defect"`: ids written as text in some records), each a JobInputError naming the first
    record. A label list in `train.data.labels` says the names on purpose and skips this."""
    blank = [w for w, v in values if not v.strip()]
    if blank:
        raise JobInputError(f"{blank[0]}: the label is empty, which would train a class of its own named ''. "
                            "To fix: fill in the record's label, or remove the record")
    digits = [(w, v) for (w, v), i in zip(values, ints) if i is not None]
    if digits:
        where, value = digits[0]
        raise JobInputError(f"{where}: label {value!r} is a number among named labels (e.g. "
                            f"{next(v for (_, v), i in zip(values, ints) if i is None)!r}), so it would train a class "
                            "of its own. To fix: write every label as a name, or every label as an id; or list the "
                            "labels in train.data.labels when a number is a name")


def label_id(value: Any, where: str, names: list[str] | None, mapping: dict[Any, int], n: int, field: str) -> int:
    """The id of label `value` of the record at `where` under the mapping `label_mapping` decided (JobInputError naming
    the record and `field` when it is not one of the labels)."""
    if names is not None:
        key = value if isinstance(value, str) else str(value)
        if key in mapping:
            return mapping[key]
        as_int = integer_label(value)
        if not isinstance(value, str) and as_int is not None and 0 <= as_int < n:
            return as_int
        raise JobInputError(f"{where}: label {value!r} (field {field!r}) is not one of the labels {names}; "
                         f"fix the record or list every label in train.data.labels")
    as_int = integer_label(value)
    if as_int is None or not 0 <= as_int < n:
        raise JobInputError(f"{where}: label {value!r} (field {field!r}) is not an id in 0..{n - 1}")
    return as_int
