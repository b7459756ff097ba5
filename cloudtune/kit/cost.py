"""What a plan says about the machine it chose and what it costs: one definition for every launcher.

The estimate is the catalog's list price per instance-hour x instances. With `spot: true` it is the spot list
price where the provider publishes one; where it does not (SageMaker managed spot) it is the on-demand price,
stated as an upper bound: the saving is known only after the job, from the billable time the service reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from cloudtune.catalog import CatalogError, load_catalog

if TYPE_CHECKING:
    from cloudtune.catalog import Catalog, Offer
    from cloudtune.spec import JobSpec

ON_DEMAND = "on-demand"
SPOT = "spot"
UPPER_BOUND = "on-demand (upper bound: spot has no list price)"


def choice_note(catalog: "Catalog", offer: "Offer", requested: str) -> str | None:
    """Why this machine type: the cheapest of those carrying the request (None when it was the only one)."""
    others = catalog.alternatives(offer)
    if not others or offer.usd_per_hour is None:
        return None
    listed = ", ".join(f"{o.instance_type} ${o.usd_per_hour:.2f}/h" for o in others[:4] if o.usd_per_hour is not None)
    return (f"{offer.instance_type} (${offer.usd_per_hour:.2f}/h) is the cheapest of {len(others) + 1} machine types "
            f"with {requested}" + (f" (also: {listed})" if listed else "")
            + f"; set resources.instance_type.{offer.provider} to choose another")


def catalog_offer(spec: "JobSpec", provider: str, kind: str) -> tuple["Offer", str | None]:
    """The catalog offer a job's nodes are, and the plan note on why: `resources.instance_type.<provider>` when set
    (CatalogError when the catalog does not know it: its accelerators would be unknown), else the cheapest offer
    carrying `resources.accelerator` (with the others named). `kind` names the provider's unit (machine type, VM
    size) in the fix. A refusal names its field by the spec's file and line."""
    catalog = load_catalog()
    override = spec.resources.instance_type.get(provider)
    if override:
        offer = catalog.by_instance_type(provider, override)
        if offer is None:
            raise CatalogError(f"{override!r} is not in the catalog: its accelerators are unknown",
                               fix=f"use a {kind} from `cloudtune catalog --provider {provider}`, or drop the override",
                               field=f"resources.instance_type.{provider}").at(spec.origin)
        return offer, None
    offer = accelerator_offer(spec, provider)
    return offer, choice_note(catalog, offer, str(spec.resources.accel))


def accelerator_offer(spec: "JobSpec", provider: str) -> "Offer":
    """The cheapest offer of `provider` carrying `resources.accelerator` (the catalog's cpu offer for cpu).
    CatalogError (exit 2) naming `resources.accelerator` by the spec's file and line, with what the provider offers
    instead, when it has none: no such accelerator there, or not in that count."""
    accel = spec.resources.accel
    try:
        return load_catalog().resolve(provider, "cpu" if accel.is_cpu else accel.name, accel.count)
    except CatalogError as exc:
        raise exc.at(spec.origin) from None


def estimate(offer: "Offer | None", spot: bool, nodes: int) -> tuple[float | None, str]:
    """(USD per hour for all `nodes` instances or None when unknown, the basis of that figure)."""
    if offer is None or offer.usd_per_hour is None:
        return None, ON_DEMAND
    if spot and offer.spot_usd_per_hour is not None:
        return round(offer.spot_usd_per_hour * nodes, 4), SPOT
    return round(offer.usd_per_hour * nodes, 4), UPPER_BOUND if spot else ON_DEMAND


def spot_saving(training_s: float | None, billable_s: float | None) -> str | None:
    """The saving a managed-spot job reports: 1 - billable / training seconds (SageMaker DescribeTrainingJob)."""
    if not training_s or billable_s is None:
        return None
    return f"managed spot saving {100 * (1 - billable_s / training_s):.0f}% (billed {billable_s:.0f} s of {training_s:.0f} s trained)"


def job_cost_usd(billable_s: float | None, usd_per_hour: float | None) -> float | None:
    """What a job cost in US dollars: the billable seconds (as the cloud reports them; a local job's start to end)
    x the plan's $/h (which already covers all its instances) / 3600. None when either is unknown. The one
    definition: `cloudtune status`, `list` and the report all use it."""
    if billable_s is None or usd_per_hour is None:
        return None
    return max(0.0, float(billable_s)) * float(usd_per_hour) / 3600.0


def epoch_seconds(value: object) -> float | None:
    """A time as a provider reports it (a datetime, epoch seconds, an ISO-8601 text) in epoch seconds; None when
    missing or unset (a protobuf's zero time)."""
    from datetime import datetime, timezone

    if isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value:
        try:
            return epoch_seconds(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    else:
        return None
    return seconds if seconds > 0 else None
