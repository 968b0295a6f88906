"""`replay-events`: feed events the receiver missed (an outage, a bad deploy) through the
same ledger path as the webhook, oldest first.

Stripe keeps events for 30 days and lists them newest first. Only events not yet in the
ledger are kept in memory, so the cost follows the size of the gap, not of the window.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine

from reconcile.events import (
    HANDLED_TYPES,
    Event,
    EventError,
    Prepared,
    event_from_mapping,
    prepare,
)
from reconcile.ledger import LedgerOptions, ObjectSource, process_events, recorded_ids, settle
from reconcile.logging import get_logger
from reconcile.snapshot import PayloadError
from reconcile.source import PageLike

MAX_WINDOW = timedelta(days=30)  # Stripe's retention of events
GROUP = 50  # events per transaction

log = get_logger(__name__)


class EventSource(ObjectSource, Protocol):
    """Listing events, and the re-reads processing may need (StripeGateway has both)."""

    def list_events(self, *, types: Sequence[str], created_gte: datetime) -> Iterator[PageLike]: ...


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay found and did."""

    since: datetime
    dry_run: bool
    listed: int
    already_recorded: int
    pending: int  # listed, readable and not yet recorded
    invalid: int
    outcomes: Mapping[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


def replay_events(
    engine: Engine,
    source: EventSource,
    *,
    since: datetime,
    options: LedgerOptions,
    dry_run: bool = False,
) -> ReplayReport:
    """List handled events created at or after `since` and process the unrecorded ones.

    Each group of events commits on its own, so a replay that fails midway (Stripe or the
    database unavailable) can simply be run again: what it did is recorded and skipped.
    """
    started = time.monotonic()
    listed = recorded = invalid = 0
    pending: list[Event] = []  # not yet in the ledger
    for page in source.list_events(types=sorted(HANDLED_TYPES), created_gte=since):
        parsed: list[Event] = []
        for obj in page.objects:
            try:
                parsed.append(event_from_mapping(obj))
            except EventError as exc:
                invalid += 1
                log.warning("replay.event_invalid", reason=exc.reason, detail=str(exc))
        listed += len(page.objects)
        with engine.connect() as conn:
            known = recorded_ids(conn, [e.id for e in parsed])
        recorded += len(known)
        pending.extend(e for e in parsed if e.id not in known)
    # Stripe lists newest first; reversed then stably sorted is oldest first, and within
    # one second keeps Stripe's own order.
    pending.reverse()
    pending.sort(key=lambda e: e.created)
    items: list[Prepared] = []
    for event in pending:
        try:
            items.append(prepare(event))
        except PayloadError as exc:
            invalid += 1
            log.warning("replay.event_invalid", event_id=event.id, type=event.type,
                        reason="malformed_object", detail=str(exc))
    outcomes: Counter[str] = Counter()
    for start in range(0, 0 if dry_run else len(items), GROUP):
        # A group shares one transaction, like events arriving together at the receiver.
        group = items[start : start + GROUP]
        for item, result in zip(group, process_events(engine, group, options), strict=True):
            # Re-fetches run after the group, outside any transaction.
            done = result if result is not None else settle(engine, item, options, source)
            outcomes[done.outcome] += 1
    report = ReplayReport(
        since=since, dry_run=dry_run, listed=listed, already_recorded=recorded,
        pending=len(items), invalid=invalid, outcomes=dict(sorted(outcomes.items())),
        duration_s=round(time.monotonic() - started, 3),
    )
    log.info("replay.finished", since=since.isoformat(), dry_run=dry_run, listed=listed,
             already_recorded=recorded, pending=len(items), invalid=invalid,
             outcomes=report.outcomes, duration_s=report.duration_s)
    return report


def render(report: ReplayReport) -> str:
    """A short text report for the terminal."""
    lines = [
        f"events since {report.since.isoformat()}: {report.listed} listed, "
        f"{report.already_recorded} already recorded, {report.invalid} invalid",
    ]
    if report.dry_run:
        lines.append(f"dry run: {report.pending} event(s) would be replayed; nothing applied")
    else:
        done = ", ".join(f"{k} {v}" for k, v in report.outcomes.items()) or "none"
        lines.append(f"replayed {report.pending} event(s): {done}")
    return "\n".join(lines) + "\n"
