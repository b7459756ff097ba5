"""Accelerator catalog: neutral accelerator names, their facts, and what each provider offers for them.

The data ships with the package as two dated CSV files read through `importlib.resources`:

* `accelerators.csv`: neutral names (T4, L4, ... TPU-v6e), vendor, memory, peak bf16 TFLOP/s, aliases.
* `offers.csv`: per provider the instance / machine types by accelerator count, with list prices.

Header lines starting with `#` carry metadata as `# key: value` (`as_of`, `regions`). This module is on
the CLI's start-up path, so it uses the standard library only.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import re
from dataclasses import dataclass, field
from typing import Protocol

from cloudtune.errors import SpecIssue, UnsupportedSpec

__all__ = [
    "PROVIDERS",
    "CPU",
    "AcceleratorInfo",
    "Offer",
    "CatalogError",
    "Catalog",
    "parse_catalog",
    "load_catalog",
    "render_table",
]

PROVIDERS: tuple[str, ...] = ("aws", "gcp", "azure")
CPU = "cpu"
ACCELERATOR_FIELD = "resources.accelerator"
"""The spec field a resolved accelerator comes from, named in the catalog's refusals."""

_OFFER_COLUMNS = (
    "provider", "accelerator", "count", "instance_type", "accelerator_memory_gb", "vcpus", "memory_gb",
    "usd_per_hour", "spot_usd_per_hour", "accelerator_type", "tpu_topology",
)
_ACCEL_COLUMNS = ("name", "vendor", "memory_gb", "peak_bf16_tflops", "aliases")
_ACCEL_OPTIONAL = ("compute_capability",)  # may follow the required columns


class CatalogError(UnsupportedSpec):
    """An accelerator, provider or count the catalog cannot serve; `fix` says what would work.

    `field` is the spec field the refused value came from (`resources.accelerator`, `resources.instance_type.aws`)
    when the lookup knows it, and `reason` the message without it: the message is `FIELD: REASON`, and `at` names
    the field by the spec's file and line, as the spec's own errors do."""

    def __init__(self, message: str, fix: str | None = None, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, fix=fix)
        self.field = field
        self.reason = message

    def at(self, origin: "_Origin") -> CatalogError:
        """This refusal with its field named where the spec set it: `job.yaml:LINE: FIELD: REASON` (or the `--set`
        item that gave it); itself when it names no field."""
        if self.field is None:
            return self
        issue = origin.issue(tuple(self.field.split(".")), self.reason)
        located = CatalogError(issue.render(origin.source), fix=self.fix)
        located.field, located.reason = self.field, self.reason
        return located


class _Origin(Protocol):
    """Where a spec came from (`cloudtune.spec.origin.SpecOrigin`), as `CatalogError.at` reads it."""

    source: str

    def issue(self, loc: tuple[str, ...], message: str, hint: str = "") -> SpecIssue: ...


@dataclass(frozen=True)
class AcceleratorInfo:
    """Facts about one neutral accelerator."""

    name: str
    vendor: str
    memory_gb: float
    peak_bf16_tflops: float | None
    aliases: tuple[str, ...] = ()
    compute_capability: tuple[int, int] | None = None  # NVIDIA CUDA (major, minor); None for TPUs or unknown


@dataclass(frozen=True)
class Offer:
    """One machine a provider rents: `count` accelerators of one kind (count 0 = the cpu offer).

    Prices are per instance-hour (the whole machine) in the catalog's price region; None = not published.
    """

    provider: str
    accelerator: str
    count: int
    instance_type: str
    accelerator_memory_gb: float
    vcpus: int
    memory_gb: float
    usd_per_hour: float | None
    spot_usd_per_hour: float | None
    accelerator_type: str | None  # provider-native accelerator enum (Vertex), else None
    tpu_topology: str | None


def _key(name: str) -> str:
    """Matching key: lower case, `_` and spaces as `-`, outer blanks dropped."""
    return re.sub(r"[\s_]+", "-", str(name).strip().lower())


def _split_header(text: str) -> tuple[dict[str, str], str]:
    """Split leading `# key: value` comment lines (metadata) from the CSV body."""
    meta: dict[str, str] = {}
    body: list[str] = []
    in_header = True
    for line in text.splitlines():
        stripped = line.strip()
        if in_header and stripped.startswith("#"):
            key, sep, value = stripped.lstrip("#").partition(":")
            if sep and re.fullmatch(r"[a-z_]+", key.strip()):
                meta[key.strip()] = value.strip()
            continue
        if not stripped:
            continue
        in_header = False
        body.append(line)
    return meta, "\n".join(body)


def _opt_float(value: str) -> float | None:
    value = value.strip()
    return float(value) if value else None


def _opt_str(value: str) -> str | None:
    value = value.strip()
    return value or None


def _join(items: list[str], last: str = "or") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


@dataclass
class Catalog:
    """Accelerators and offers, with lookups that raise `CatalogError` carrying a fix."""

    as_of: str
    accelerator_infos: list[AcceleratorInfo] = field(repr=False)
    all_offers: list[Offer] = field(repr=False)
    regions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._infos: dict[str, AcceleratorInfo] = {a.name: a for a in self.accelerator_infos}
        self._aliases: dict[str, str] = {CPU: CPU}
        for info in self.accelerator_infos:
            for alias in (info.name, *info.aliases):
                self._aliases[_key(alias)] = info.name
        for offer in self.all_offers:
            if offer.provider not in PROVIDERS:
                raise ValueError(f"catalog offer {offer.instance_type}: unknown provider {offer.provider!r}")
            if offer.accelerator != CPU and offer.accelerator not in self._infos:
                raise ValueError(f"catalog offer {offer.instance_type}: unknown accelerator {offer.accelerator!r}")

    # ------------------------------------------------------------------ names
    def accelerators(self) -> list[str]:
        """Neutral accelerator names in catalog order (without `cpu`)."""
        return [a.name for a in self.accelerator_infos]

    def normalize(self, name: str) -> str:
        """Map any accepted spelling (`v5e`, `a100`, `h100-80gb`, `cpu`) to its neutral name."""
        key = _key(name)
        if key in self._aliases:
            return self._aliases[key]
        guesses = difflib.get_close_matches(key, list(self._aliases), n=3, cutoff=0.6)
        suggestions = list(dict.fromkeys(self._aliases[g] for g in guesses))
        hint = f" (did you mean {_join(suggestions)}?)" if suggestions else ""
        raise CatalogError(
            f"unknown accelerator {name!r}{hint}",
            fix=f"use one of: {', '.join(self.accelerators())}, or cpu",
        )

    def variants(self, name: str) -> list[str]:
        """The neutral names a bare family name stands for, the one it maps to first: `A100` -> [A100-40GB,
        A100-80GB] (parts that differ by memory, named `FAMILY-<N>GB`); [] for a name that means one part.
        CatalogError for a name the catalog does not know."""
        chosen = self.normalize(name)
        family = _key(name)
        if family == _key(chosen) or chosen == CPU:
            return []
        same = [a for a in self.accelerators() if re.fullmatch(re.escape(family) + r"-[0-9]+gb", _key(a))]
        return [chosen] + [a for a in same if a != chosen] if len(same) > 1 and chosen in same else []

    def meaning_note(self, accelerator: str) -> str | None:
        """For a spec's `NAME[:COUNT]` whose NAME is a family with several parts (`A100:8`): one line saying which
        part it means, its memory, and how to choose the other; None otherwise."""
        name = str(accelerator).partition(":")[0]
        try:
            parts = self.variants(name)
        except CatalogError:
            return None
        if not parts:
            return None
        memory = ", ".join(f"{p} ({self._infos[p].memory_gb:g} GB per device)" for p in parts[1:])
        return (f"resources.accelerator: {name} means {parts[0]} ({self._infos[parts[0]].memory_gb:g} GB per device); "
                f"{memory} is another part: write its name to choose it (`cloudtune catalog -a {name}` lists both)")

    def info(self, accelerator: str) -> AcceleratorInfo | None:
        """Facts about an accelerator (None for cpu)."""
        return self._infos.get(self.normalize(accelerator))

    def peak_bf16_tflops(self, accelerator: str) -> float | None:
        """Peak dense bf16 TFLOP/s per device; None for cpu or a device without bf16 (T4)."""
        info = self.info(accelerator)
        return info.peak_bf16_tflops if info else None

    def _provider(self, provider: str) -> str:
        p = str(provider).strip().lower()
        if p not in PROVIDERS:
            raise CatalogError(
                f"the catalog has no provider {provider!r}",
                fix=f"use one of: {', '.join(PROVIDERS)}",
            )
        return p

    # ------------------------------------------------------------------ offers
    def offers(self, provider: str | None = None, accelerator: str | None = None) -> list[Offer]:
        """Offers in catalog order, optionally filtered by provider and accelerator (any spelling; a family name such
        as `A100` gives the offers of each of its parts, see `variants`)."""
        p = self._provider(provider) if provider is not None else None
        names = (self.variants(accelerator) or [self.normalize(accelerator)]) if accelerator is not None else None
        return [o for o in self.all_offers if (p is None or o.provider == p) and (names is None or o.accelerator in names)]

    def providers_with(self, accelerator: str) -> list[str]:
        """Providers offering the accelerator, in PROVIDERS order."""
        have = {o.provider for o in self.offers(accelerator=accelerator)}
        return [p for p in PROVIDERS if p in have]

    def counts(self, provider: str, accelerator: str) -> list[int]:
        """Accelerator counts per machine a provider offers, ascending."""
        return sorted({o.count for o in self.offers(provider, accelerator)})

    def resolve(self, provider: str, accelerator: str, count: int, field: str | None = ACCELERATOR_FIELD) -> Offer:
        """The cheapest offer (on-demand $/h) of `count` x `accelerator` on `provider` (exact count; `cpu` ignores
        count and takes the first cpu row). CatalogError with a fix when there is none, naming `field` (the spec
        field the accelerator came from; None: no field) and what the provider offers instead."""
        p = self._provider(provider)
        try:
            a = self.normalize(accelerator)
        except CatalogError as exc:
            raise CatalogError(exc.reason, fix=exc.fix, field=field) from None
        candidates = self.offers(p, a)
        if a == CPU:
            if not candidates:
                raise CatalogError(f"{p} has no cpu offer in the catalog", field=field)
            return candidates[0]
        if not candidates:
            others = [q for q in self.providers_with(a) if q != p]
            here = [x for x in self.accelerators() if any(o.accelerator == x for o in self.all_offers if o.provider == p)]
            use = _join([f"--provider {q}" for q in others]) if others else ""
            fix = (f"use {use}, or " if use else "") + f"choose one of: {', '.join(here)} (or cpu) on {p}"
            raise CatalogError(f"{p} has no {a}", fix=fix, field=field)
        fitting = [o for o in candidates if o.count == count]
        if fitting:  # the cheapest machine type that carries them (first listed on a tie or without prices)
            return min(fitting, key=lambda o: float("inf") if o.usd_per_hour is None else o.usd_per_hour)
        raise CatalogError(f"{p} offers {a} in counts of {_join([str(c) for c in self.counts(p, a)])} per machine, "
                           f"not {count}", fix=self._count_fix(candidates, a, count), field=field)

    @staticmethod
    def _count_fix(candidates: list[Offer], accelerator: str, count: int) -> str:
        """The fix of a count the provider does not offer: the counts it does (a TPU's with its slice topology), and
        for a GPU count that whole machines make up, as many nodes (cloudtune runs one TPU slice on one host)."""
        counts = sorted({o.count for o in candidates})
        topology = {o.count: o.tpu_topology for o in candidates if o.tpu_topology}
        asks = [f"{accelerator}:{c}" + (f" (a {topology[c]} slice)" if c in topology else "") for c in counts]
        fix = f"ask for {_join(asks)}"
        biggest = counts[-1]
        if not topology and count > biggest and count % biggest == 0:
            fix += f", or use nodes: {count // biggest} with {accelerator}:{biggest}"
        return fix

    def alternatives(self, offer: Offer) -> list[Offer]:
        """The provider's other machine types with the same accelerator and count as `offer`."""
        return [o for o in self.offers(offer.provider, offer.accelerator)
                if o.count == offer.count and o.instance_type != offer.instance_type]

    def by_instance_type(self, provider: str, instance_type: str) -> Offer | None:
        """The offer with this instance / machine type on `provider` (case-insensitive), or None."""
        p = self._provider(provider)
        wanted = instance_type.strip().lower()
        for offer in self.all_offers:
            if offer.provider == p and offer.instance_type.lower() == wanted:
                return offer
        return None


def _parse_accelerators(text: str) -> list[AcceleratorInfo]:
    _, body = _split_header(text)
    reader = csv.DictReader(io.StringIO(body))
    names = tuple(reader.fieldnames or ())
    if names[:len(_ACCEL_COLUMNS)] != _ACCEL_COLUMNS or names[len(_ACCEL_COLUMNS):] not in ((), _ACCEL_OPTIONAL):
        raise ValueError(f"accelerators.csv: expected columns {_ACCEL_COLUMNS + _ACCEL_OPTIONAL}, got {reader.fieldnames}")
    return [
        AcceleratorInfo(
            name=row["name"].strip(),
            vendor=row["vendor"].strip(),
            memory_gb=float(row["memory_gb"]),
            peak_bf16_tflops=_opt_float(row["peak_bf16_tflops"]),
            aliases=tuple(a.strip() for a in row["aliases"].split("|") if a.strip()),
            compute_capability=_capability(row.get("compute_capability") or ""),
        )
        for row in reader
    ]


def _capability(value: str) -> tuple[int, int] | None:
    """`8.6` -> (8, 6); empty -> None; ValueError for anything else."""
    value = value.strip()
    if not value:
        return None
    major, _, minor = value.partition(".")
    return int(major), int(minor or 0)


def _parse_offers(text: str) -> tuple[dict[str, str], list[Offer]]:
    meta, body = _split_header(text)
    reader = csv.DictReader(io.StringIO(body))
    if tuple(reader.fieldnames or ()) != _OFFER_COLUMNS:
        raise ValueError(f"offers.csv: expected columns {_OFFER_COLUMNS}, got {reader.fieldnames}")
    offers = [
        Offer(
            provider=row["provider"].strip(),
            accelerator=row["accelerator"].strip(),
            count=int(row["count"]),
            instance_type=row["instance_type"].strip(),
            accelerator_memory_gb=float(row["accelerator_memory_gb"] or 0),
            vcpus=int(row["vcpus"]),
            memory_gb=float(row["memory_gb"]),
            usd_per_hour=_opt_float(row["usd_per_hour"]),
            spot_usd_per_hour=_opt_float(row["spot_usd_per_hour"]),
            accelerator_type=_opt_str(row["accelerator_type"]),
            tpu_topology=_opt_str(row["tpu_topology"]),
        )
        for row in reader
    ]
    return meta, offers


def parse_catalog(offers_text: str, accelerators_text: str) -> Catalog:
    """Build a Catalog from the text of offers.csv and accelerators.csv."""
    meta, offers = _parse_offers(offers_text)
    from datetime import date

    as_of = meta.get("as_of", "")
    date.fromisoformat(as_of)  # ValueError on a missing or malformed date
    regions = dict(item.split("=", 1) for item in meta.get("regions", "").split() if "=" in item)
    return Catalog(as_of=as_of, accelerator_infos=_parse_accelerators(accelerators_text), all_offers=offers, regions=regions)


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The catalog shipped with cloudtune (read once, cached)."""
    from importlib.resources import files

    data = files(__name__)
    return parse_catalog(
        data.joinpath("offers.csv").read_text(encoding="utf-8"),
        data.joinpath("accelerators.csv").read_text(encoding="utf-8"),
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _price(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def render_table(offers: list[Offer]) -> str:
    """Plain aligned text table of offers; unknown prices show as `-`. A TOPOLOGY column (the TPU slice shape,
    e.g. 2x2) is added when any offer is a TPU."""
    header = ["PROVIDER", "ACCELERATOR", "COUNT", "INSTANCE TYPE", "MEM/DEVICE GB", "VCPUS", "$/H", "SPOT $/H"]
    right = {2, 4, 5, 6, 7}
    rows = [
        [
            o.provider,
            o.accelerator,
            str(o.count),
            o.instance_type,
            _num(o.accelerator_memory_gb) if o.count else "-",
            str(o.vcpus),
            _price(o.usd_per_hour),
            _price(o.spot_usd_per_hour),
        ]
        for o in offers
    ]
    if any(o.tpu_topology for o in offers):
        header.insert(4, "TOPOLOGY")
        for row, o in zip(rows, offers):
            row.insert(4, o.tpu_topology or "-")
        right = {i + (i >= 4) for i in right}
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)
