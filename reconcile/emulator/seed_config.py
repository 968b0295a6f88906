"""Seeding options, the report, and billing-period arithmetic for seeded subscriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from .clock import add_months

# (index of the period since the anchor, start, end, start of the previous period)
Period = tuple[int, int, int, int]

DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "active": 0.80,
        "trialing": 0.04,
        "past_due": 0.04,
        "unpaid": 0.02,
        "canceled": 0.06,
        "incomplete": 0.01,
        "incomplete_expired": 0.01,
        "paused": 0.02,
    }
)


@dataclass(frozen=True)
class SeedReport:
    """What `seed` created and how long it took."""

    customers: int
    subscriptions: int
    invoices: int
    events: int
    by_status: dict[str, int]
    seconds: float


@dataclass(frozen=True, slots=True)
class SeedOptions:
    """Knobs for `seed`; see `StripeEmulator.seed`."""

    rng_seed: int
    mix: Mapping[str, float]
    emit_events: bool
    invoices_per_subscription: int
    cancel_at_period_end_rate: float
    freeze_gc: bool = True


def recent_periods(anchor: int, interval: str, until: int, keep: int) -> list[Period]:
    """The last `keep` billing periods up to the one containing `until`.

    Computed by month arithmetic from the anchor instead of stepping period by period,
    which matters at 100k subscriptions.
    """
    step = 12 if interval == "year" else 1
    a, u = datetime.fromtimestamp(anchor, UTC), datetime.fromtimestamp(until, UTC)
    k = max(0, ((u.year - a.year) * 12 + u.month - a.month) // step)
    while k > 0 and add_months(anchor, k * step) > until:
        k -= 1
    while add_months(anchor, (k + 1) * step) <= until:
        k += 1
    first = max(0, k - keep + 1)
    bounds = {i: add_months(anchor, i * step) for i in range(max(0, first - 1), k + 2)}
    return [(i, bounds[i], bounds[i + 1], bounds[max(0, i - 1)]) for i in range(first, k + 1)]
