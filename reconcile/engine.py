"""A reconciliation run: Stripe -> snapshot -> stage -> diff -> apply, in one transaction.

A dry run does exactly the same work and rolls back, so its report is what a real run would
change. Nothing is written unless the whole listing completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, text

from reconcile import diff, guards, runs, staging
from reconcile.apply import Applied, reconcile_staged
from reconcile.diff import Drift
from reconcile.errors import ReconcileError
from reconcile.listing import in_background
from reconcile.policy import TERMINAL_SUBSCRIPTION_STATUSES, UNSETTLED_INVOICE_STATUSES
from reconcile.snapshot import (
    InvoiceState,
    SubscriptionState,
    invoice_from_payload,
    subscription_from_payload,
)
from reconcile.source import PageLike, StripeSource

log = structlog.get_logger("reconcile.engine")

Progress = Callable[[str, int], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run: what the CLI flags and settings decided."""

    dry_run: bool
    max_changes: int
    force: bool = False
    lookback_days: int = 45
    report_limit: int = 1000
    notify_max_age: timedelta = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run found and did."""

    run_id: int
    dry_run: bool
    outcome: str
    counts: dict[str, int]
    drift: tuple[Drift, ...]
    drift_total: int
    changed_rows: int
    applied: Applied
    objects_listed: int
    stripe_requests: int
    rate_limited: int
    duration_s: float
    extra: dict[str, int] = field(default_factory=dict)
    # listing_s: listing, snapshot and COPY (streamed together); database_s: the rest
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Listing:
    """Counters while streaming a listing (mutable on purpose, local to a run)."""

    objects: int = 0
    first_observed: datetime | None = None

    def states(
        self, pages: Iterator[PageLike], convert: Callable[[PageLike], Iterable[T]],
        progress: Progress | None, label: str,
    ) -> Iterator[T]:
        for page in pages:
            if self.first_observed is None:
                self.first_observed = page.observed_at
            yield from convert(page)
            self.objects += len(page.objects)
            if progress:
                progress(label, self.objects)


def _subscriptions(page: PageLike) -> Iterable[SubscriptionState]:
    return (subscription_from_payload(o, page.observed_at) for o in page.objects)


def _invoices(page: PageLike) -> Iterable[InvoiceState]:
    return (invoice_from_payload(o, page.observed_at) for o in page.objects)


def _confirm_missing(
    conn: Connection, source: StripeSource, options: RunOptions,
    subs_since: datetime, invoices_since: datetime,
) -> int:
    """Retrieve each local object the complete listing did not return.

    Only a confirmed 404 marks it gone, as of the listing's start on Stripe's clock (it was
    absent then); an object that does exist is staged like any other. Rows written after the
    listing began (by the webhook) are not questioned.
    """
    subs = conn.execute(
        text(
            "SELECT l.stripe_subscription_id FROM subscriptions l "
            "WHERE l.status <> ALL(CAST(:terminal AS text[])) AND l.stripe_observed_at < :since "
            "AND NOT EXISTS (SELECT 1 FROM stage_subscriptions s "
            "WHERE s.stripe_subscription_id = l.stripe_subscription_id)"
        ),
        {"terminal": list(TERMINAL_SUBSCRIPTION_STATUSES), "since": subs_since},
    ).scalars().all()
    invoices = conn.execute(
        text(
            "SELECT l.stripe_invoice_id FROM invoices l "
            "WHERE l.status = ANY(CAST(:unsettled AS text[])) AND l.stripe_observed_at < :since "
            "AND NOT EXISTS (SELECT 1 FROM stage_invoices s "
            "WHERE s.stripe_invoice_id = l.stripe_invoice_id)"
        ),
        {"unsettled": list(UNSETTLED_INVOICE_STATUSES), "since": invoices_since},
    ).scalars().all()
    guards.check_safety_valve(
        len(subs) + len(invoices), options.max_changes, force=options.force,
        what="local objects missing from Stripe's listing",
    )
    for sub_id in subs:
        found = source.retrieve_subscription(sub_id)
        if found is None:
            staging.stage_gone(conn, "subscription", sub_id, subs_since)
        else:
            staging.stage_subscriptions(
                conn, [subscription_from_payload(found.object, found.observed_at)]
            )
    for inv_id in invoices:
        found_inv = source.retrieve_invoice(inv_id)
        if found_inv is None:
            staging.stage_gone(conn, "invoice", inv_id, invoices_since)
        else:
            staging.stage_invoices(
                conn, [invoice_from_payload(found_inv.object, found_inv.observed_at)]
            )
    return len(subs) + len(invoices)


def _outcome(options: RunOptions, changed: int) -> str:
    if changed == 0:
        return "in_sync"
    return "drift" if options.dry_run else "corrected"


def run_reconciliation(
    engine: Engine, source: StripeSource, options: RunOptions,
    *, progress: Progress | None = None,
) -> RunResult:
    """One whole run; raises a ReconcileError (after recording it) when it cannot finish."""
    started = time.monotonic()
    run_id = runs.start_run(engine, dry_run=options.dry_run)
    subs, invoices = _Listing(), _Listing()
    try:
        with engine.connect() as conn, conn.begin() as tx:
            guards.acquire_run_lock(conn)
            account = source.account()
            guards.check_account(
                conn, account.id, account.livemode, remember=not options.dry_run
            )
            staging.prepare(conn)
            listing_began = datetime.now(UTC)
            # Pages are fetched one step ahead in a thread, so each round trip overlaps the
            # snapshot and COPY work on the page before it.
            sub_pages = in_background([source.list_subscriptions])
            staging.stage_subscriptions(
                conn, subs.states(sub_pages, _subscriptions, progress, "subscriptions")
            )
            invoice_pages = in_background(
                [lambda: source.list_invoices(lookback_days=options.lookback_days,
                                              now=listing_began)]
            )
            staging.stage_invoices(
                conn, invoices.states(invoice_pages, _invoices, progress, "invoices")
            )
            listed = time.monotonic()
            staging.analyze(conn)
            confirmed = _confirm_missing(
                conn, source, options,
                subs.first_observed or listing_began, invoices.first_observed or listing_began,
            )
            applied = reconcile_staged(conn, notify_max_age=options.notify_max_age)
            counts = diff.counts(conn)
            changed = diff.changed_rows(conn)
            entries = tuple(diff.entries(conn, limit=options.report_limit))
            total = sum(counts.values())
            if not options.dry_run:
                guards.check_safety_valve(
                    changed, options.max_changes, force=options.force, what="rows"
                )
            if options.dry_run:
                tx.rollback()
            else:
                tx.commit()
            finished = time.monotonic()
    except ReconcileError as exc:
        outcome = {4: "locked", 5: "safety_valve"}.get(exc.exit_code, "failed")
        runs.finish_run(
            engine, run_id, outcome=outcome, objects_listed=subs.objects + invoices.objects,
            stripe_requests=source.stats.requests, error=str(exc),
        )
        log.error("reconcile.run_failed", run_id=run_id, outcome=outcome, error=str(exc))
        raise
    except Exception as exc:
        runs.finish_run(
            engine, run_id, outcome="failed", stripe_requests=source.stats.requests,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    written = 0 if options.dry_run else applied.total
    result = RunResult(
        run_id=run_id, dry_run=options.dry_run, outcome=_outcome(options, changed),
        counts=counts, drift=entries, drift_total=total, changed_rows=changed,
        applied=applied if not options.dry_run else Applied(),
        objects_listed=subs.objects + invoices.objects,
        stripe_requests=source.stats.requests, rate_limited=source.stats.rate_limited,
        duration_s=round(time.monotonic() - started, 3),
        extra={"confirmations": confirmed},
        timings={"listing_s": round(listed - started, 3),
                 "database_s": round(finished - listed, 3)},
    )
    runs.finish_run(
        engine, run_id, outcome=result.outcome, counts=counts, changes_applied=written,
        objects_listed=result.objects_listed, stripe_requests=result.stripe_requests,
    )
    log.info(
        "reconcile.run_finished", run_id=run_id, dry_run=options.dry_run,
        outcome=result.outcome, drift=counts, changed_rows=changed, rows_written=written,
        objects_listed=result.objects_listed, stripe_requests=result.stripe_requests,
        rate_limited=result.rate_limited, duration_s=result.duration_s, **result.timings,
    )
    return result
