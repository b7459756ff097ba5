"""What a plan says about the machine it chose and what it costs: one definition for every launcher.

The estimate is the catalog's list price per instance-hour x instances. With `spot: true` it is the spot list
price where the provider publishes one; where it does not (SageMaker managed spot) it is the on-demand price,
stated as an upper bound: the saving is known only after the job, from the billable time the service reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudtune.catalog import Catalog, Offer

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
