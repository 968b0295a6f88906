"""The database side of payment retries: candidate selection, attempt rows, the run lock.

Every function is one statement or one short transaction; the HTTP calls in between belong
to `reconcile.retries`, which is why the run lock is a session lock, not a transaction one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text

from reconcile import staging
from reconcile.apply import reconcile_staged
from reconcile.errors import LockHeldError
from reconcile.retry_policy import (
    ABANDONED,
    CHARGEABLE_SUBSCRIPTION_STATUSES,
    MADE_OUTCOMES,
    PENDING,
    event_type_for,
)
from reconcile.snapshot import InvoiceState, SubscriptionState

# Not the reconciliation's lock: a retry run and a reconciliation may overlap (both write
# through the guarded apply); two retry runs may not.
RETRY_LOCK_KEY = 0x5EC0_C11E_0000_0002

# `made` positions the invoice in the schedule; `attempt` numbers the next key. They differ
# once a crashed attempt was abandoned: its number (and key) is never reused.
_CANDIDATES = """
WITH a AS (
    SELECT stripe_invoice_id,
           count(*) FILTER (WHERE outcome = ANY(CAST(:made AS text[]))) AS made,
           max(attempt) FILTER (WHERE outcome <> :pending) AS last_number,
           max(attempt) FILTER (WHERE outcome = :pending) AS pending_number
      FROM payment_attempts GROUP BY stripe_invoice_id
)
SELECT i.stripe_invoice_id, s.status AS local_status, COALESCE(a.made, 0) AS made,
       COALESCE(a.pending_number, COALESCE(a.last_number, 0) + 1) AS attempt,
       a.pending_number IS NOT NULL AS resumed
  FROM invoices i
  LEFT JOIN subscriptions s ON s.stripe_subscription_id = i.stripe_subscription_id
  LEFT JOIN a ON a.stripe_invoice_id = i.stripe_invoice_id
 WHERE a.pending_number IS NOT NULL
    OR (i.status = 'open' AND i.amount_remaining > 0 AND i.attempt_count >= 1
        AND s.status = ANY(CAST(:chargeable AS text[]))
        AND COALESCE(a.made, 0) < cardinality(CAST(:offsets AS interval[]))
        AND COALESCE(i.created, i.stripe_observed_at)
            + (CAST(:offsets AS interval[]))[COALESCE(a.made, 0) + 1] <= :now)
 ORDER BY i.created NULLS LAST, i.stripe_invoice_id
"""
_INSERT_PENDING = """
INSERT INTO payment_attempts (stripe_invoice_id, stripe_subscription_id, attempt,
                              idempotency_key, amount, currency, outcome)
VALUES (:invoice, :subscription, :attempt, :key, :amount, :currency, :pending)
ON CONFLICT (stripe_invoice_id, attempt) DO NOTHING
"""
_FINISH = """
UPDATE payment_attempts SET outcome = :outcome, error_code = :code, decline_code = :decline,
       replayed = :replayed, finished_at = now()
 WHERE stripe_invoice_id = :invoice AND attempt = :attempt AND outcome = :pending
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An invoice the SQL pre-selection found, with its attempt bookkeeping."""

    invoice_id: str
    local_status: str | None
    made: int
    attempt: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class Finished:
    """How an attempt row ends: an outcome of the charge, or `abandoned`."""

    outcome: str
    code: str | None = None
    decline_code: str | None = None
    replayed: bool = False


def select_candidates(
    conn: Connection, schedule: Sequence[timedelta], now: datetime
) -> list[Candidate]:
    """Open unpaid invoices whose next schedule slot has come, and crashed attempts."""
    rows = conn.execute(text(_CANDIDATES), {
        "made": list(MADE_OUTCOMES), "pending": PENDING, "now": now,
        "chargeable": list(CHARGEABLE_SUBSCRIPTION_STATUSES), "offsets": list(schedule),
    }).all()
    return [Candidate(str(r[0]), r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows]


@contextmanager
def run_lock(engine: Engine) -> Iterator[Connection]:
    """A session lock (held across the run's many short transactions), never waited for."""
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETRY_LOCK_KEY})
        held = bool(got.scalar_one())
        conn.commit()
        if not held:
            raise LockHeldError(
                "another retry-payments run holds the lock",
                hint="wait for it to finish; retry runs are serialised per database",
            )
        try:
            yield conn
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETRY_LOCK_KEY})
            conn.commit()


def record_pending(engine: Engine, c: Candidate, invoice: InvoiceState, key: str) -> None:
    """Commit the attempt row before the charge is sent (a rerun's row already exists)."""
    with engine.begin() as conn:
        conn.execute(text(_INSERT_PENDING), {
            "invoice": c.invoice_id, "subscription": invoice.stripe_subscription_id,
            "attempt": c.attempt, "key": key, "amount": invoice.amount_remaining,
            "currency": invoice.currency, "pending": PENDING,
        })


def settle(
    engine: Engine, c: Candidate, *, finished: Finished | None,
    invoices: Sequence[InvoiceState], subscription: SubscriptionState | None,
    notify_max_age: timedelta,
) -> None:
    """Close the attempt row and apply the fresh Stripe state, in one transaction.

    A charge's outcome goes through apply as the Stripe event it amounts to, so a decline
    queues the same notification a webhook's `invoice.payment_failed` would.
    """
    if finished is None and c.resumed:  # a crashed attempt whose invoice is no longer due
        finished = Finished(ABANDONED)
    with engine.begin() as conn:
        if finished is not None:
            conn.execute(text(_FINISH), {
                "invoice": c.invoice_id, "attempt": c.attempt, "outcome": finished.outcome,
                "code": finished.code, "decline": finished.decline_code,
                "replayed": finished.replayed, "pending": PENDING,
            })
        if not invoices and subscription is None:
            return
        staging.prepare(conn)
        staging.stage_invoices(conn, invoices)
        if subscription is not None:
            staging.stage_subscriptions(conn, [subscription])
        charged = finished is not None and finished.outcome != ABANDONED
        reconcile_staged(
            conn, allow_tie=True, notify_max_age=notify_max_age,
            event_type=event_type_for(finished.outcome) if charged and finished else None,
        )
