"""The emulator's frozen clock and billing-interval arithmetic."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

DAY = 86_400


class Clock:
    """Frozen time, like a Stripe test clock: it only moves when told to."""

    def __init__(self, start: int) -> None:
        self._now = start

    @property
    def now(self) -> int:
        """Current emulator time, Unix seconds."""
        return self._now

    def move_to(self, ts: int) -> None:
        """Move forward to `ts`; never backwards, so event order stays causal."""
        self._now = max(self._now, ts)


def add_months(ts: int, months: int) -> int:
    """Calendar-month arithmetic clamping the day, as Stripe bills Jan 31 -> Feb 28."""
    dt = datetime.fromtimestamp(ts, UTC)
    index = dt.month - 1 + months
    year, month = dt.year + index // 12, index % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def add_interval(ts: int, interval: str, count: int) -> int:
    """`ts` plus `count` billing intervals (day, week, month or year)."""
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    if interval == "year":
        return add_months(ts, 12 * count)
    return add_months(ts, count)


def period_end_after(anchor: int, current_end: int, interval: str, count: int) -> int:
    """The end of the period that follows one ending at `current_end`.

    Counted from the billing-cycle anchor rather than from the previous end so a
    Jan 31 anchor bills Feb 28 and then Mar 31, not Mar 28.
    """
    if interval in ("day", "week"):
        return add_interval(current_end, interval, count)
    a = datetime.fromtimestamp(anchor, UTC)
    e = datetime.fromtimestamp(current_end, UTC)
    months = (e.year - a.year) * 12 + e.month - a.month
    step = count * (12 if interval == "year" else 1)
    candidate = add_months(anchor, months + step)
    while candidate <= current_end:
        months += step
        candidate = add_months(anchor, months + step)
    return candidate
