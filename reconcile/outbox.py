"""The notification outbox, written inside `apply.reconcile_staged`'s transaction.

The batch job and the webhook receiver both apply what they staged through the one apply
path, so this is where "an invoice became unpaid" is noticed: rows go into `notifications`
in the same transaction as the state change that revealed the failure (so a change that
rolls back queues nothing), with ON CONFLICT DO NOTHING on (kind, invoice) so however often
and by whichever path a failure is seen, it is queued once. Detection is state-based (the
invoice as it stands after applying), so a missed webhook or an already-failed invoice on
the first run are caught too; failures older than the max age are recorded as suppressed.

Every statement is one set-based pass over the staged ids; `reconcile.notify` sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, text

from reconcile.fields import INVOICE_SOURCE, fresher, not_regressing
from reconcile.notify_policy import (
    ACTION_REQUIRED,
    EMAIL_KINDS,
    ENDED_SUBSCRIPTION_STATUSES,
    EVENT_ACTION_REQUIRED,
    EVENT_PAYMENT_FAILED,
    FAILURE_EVENTS,
    INVOICE_UNCOLLECTIBLE,
    PAYMENT_FAILED,
    PAYMENT_FAILED_HOLD,
    SETTLED_INVOICE_STATUSES,
    SUBSCRIPTION_CANCELED,
)

STALE_REASON = "failure older than NOTIFY_MAX_AGE_HOURS"

# Before the invoice update: an accepted observation with more attempts than the row (or a
# move to uncollectible, or a failure event) dates the failure at the observation.
_NOTE_FAILURES = f"""
    WITH r AS ({INVOICE_SOURCE})
    UPDATE invoices l SET payment_failed_at = r.observed_at
      FROM r
     WHERE l.stripe_invoice_id = r.stripe_invoice_id
       AND {fresher("l", "r.observed_at")}
       AND {not_regressing("l", "r.status", "inv_terminal")}
       AND (r.attempt_count > l.attempt_count
            OR (r.status = 'uncollectible' AND l.status <> 'uncollectible')
            OR CAST(:failure_event AS boolean))
       AND l.payment_failed_at IS DISTINCT FROM r.observed_at
"""

# After insert/update: product facts, and a failure time for invoices first seen already
# failed. Their creation is the earliest the failure can have been, so a first run against
# an old account errs towards suppressing, never towards e-mailing about old failures.
_FILL_FACTS = f"""
    WITH r AS ({INVOICE_SOURCE})
    UPDATE invoices l SET
           stripe_product_id = COALESCE(r.stripe_product_id, l.stripe_product_id),
           product_name = COALESCE(r.product_name, l.product_name),
           payment_failed_at = COALESCE(l.payment_failed_at, CASE
               WHEN CAST(:failure_event AS boolean) THEN r.observed_at
               WHEN l.attempt_count >= 1 OR l.status = 'uncollectible'
               THEN LEAST(r.observed_at, COALESCE(r.created, r.observed_at)) END)
      FROM r
     WHERE l.stripe_invoice_id = r.stripe_invoice_id
       AND l.stripe_observed_at <= r.observed_at
       AND ((l.stripe_product_id IS NULL AND r.stripe_product_id IS NOT NULL)
            OR (l.product_name IS NULL AND r.product_name IS NOT NULL)
            OR (l.payment_failed_at IS NULL
                AND (l.attempt_count >= 1 OR l.status = 'uncollectible'
                     OR CAST(:failure_event AS boolean))))
"""

# The staged invoices as they stand now, with who to write to and how old the failure is.
_CANDIDATES = f"""
    WITH r AS ({INVOICE_SOURCE}), c AS (
        SELECT i.*, COALESCE(u.email, i.customer_email) AS recipient,
               i.payment_failed_at < GREATEST(r.observed_at, i.stripe_observed_at)
                                     - CAST(:max_age AS interval) AS stale
          FROM r JOIN invoices i ON i.stripe_invoice_id = r.stripe_invoice_id
          LEFT JOIN users u ON u.stripe_customer_id = i.stripe_customer_id
          LEFT JOIN subscriptions s ON s.stripe_subscription_id = i.stripe_subscription_id
         WHERE i.amount_remaining > 0
           AND (s.status IS NULL OR s.status <> ALL(CAST(:ended AS text[])))
    )
"""


def _insert(kind: str, recipient: str, delay: str, where: str) -> str:
    return f"""
    {_CANDIDATES}, ins AS (
        INSERT INTO notifications (kind, stripe_invoice_id, stripe_customer_id, recipient,
                                   status, next_attempt_at, failed_at, last_error)
        SELECT '{kind}', c.stripe_invoice_id, c.stripe_customer_id, {recipient},
               CASE WHEN c.stale THEN 'suppressed' ELSE 'pending' END, now() + {delay},
               c.payment_failed_at, CASE WHEN c.stale THEN :stale_reason END
          FROM c WHERE {where}
        ON CONFLICT (kind, stripe_invoice_id) DO NOTHING
        RETURNING status
    )
    SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status <> 'pending')
      FROM ins
    """


_ENQUEUE_ACTION_REQUIRED = _insert(
    ACTION_REQUIRED, "c.recipient", "interval '0'", "c.status = 'open'"
)
_ENQUEUE_PAYMENT_FAILED = _insert(
    PAYMENT_FAILED,
    "c.recipient",
    "CAST(:hold AS interval)",
    f"""(c.status = 'uncollectible'
         OR (c.status = 'open' AND (c.attempt_count >= 1 OR :event = '{EVENT_PAYMENT_FAILED}')))
        AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.kind = '{ACTION_REQUIRED}'
                         AND n.stripe_invoice_id = c.stripe_invoice_id)""",
)
_ENQUEUE_UNCOLLECTIBLE = _insert(
    INVOICE_UNCOLLECTIBLE, "NULL", "interval '0'", "c.status = 'uncollectible'"
)

# Ended with an unpaid, attempted invoice: canceled for non-payment. Keyed by that invoice.
_ENQUEUE_SUBSCRIPTION_CANCELED = f"""
    WITH seen AS (
        SELECT stripe_subscription_id AS id, observed_at FROM stage_subscriptions
        UNION ALL
        SELECT stripe_id, observed_at FROM stage_gone WHERE object = 'subscription'
    ), ended AS (
        SELECT DISTINCT ON (s.stripe_subscription_id) i.stripe_invoice_id, i.stripe_customer_id,
               COALESCE(s.end_date, s.stripe_observed_at) AS ended_at,
               COALESCE(s.end_date, s.stripe_observed_at)
                   < GREATEST(x.observed_at, s.stripe_observed_at)
                     - CAST(:max_age AS interval) AS stale
          FROM (SELECT id, max(observed_at) AS observed_at FROM seen
                 -- only subscriptions this apply ended (drift is recorded before writing)
                 WHERE id IN (SELECT stripe_id FROM drift WHERE object = 'subscription'
                               AND kind IN ('status', 'missing_local', 'missing_in_stripe'))
                 GROUP BY id) x
          JOIN subscriptions s ON s.stripe_subscription_id = x.id
          JOIN invoices i ON i.stripe_subscription_id = s.stripe_subscription_id
         WHERE s.status = ANY(CAST(:ended AS text[]))
           AND i.status IN ('open', 'uncollectible') AND i.amount_remaining > 0
           AND i.attempt_count >= 1
         ORDER BY s.stripe_subscription_id, i.created DESC NULLS LAST, i.id DESC
    ), ins AS (
        INSERT INTO notifications (kind, stripe_invoice_id, stripe_customer_id, status,
                                   next_attempt_at, failed_at, last_error)
        SELECT '{SUBSCRIPTION_CANCELED}', stripe_invoice_id, stripe_customer_id,
               CASE WHEN stale THEN 'suppressed' ELSE 'pending' END, now(), ended_at,
               CASE WHEN stale THEN :stale_reason END
          FROM ended
        ON CONFLICT (kind, stripe_invoice_id) DO NOTHING
        RETURNING status
    )
    SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status <> 'pending')
      FROM ins
"""

# A customer asked to confirm a payment must not also be told to replace their card.
_SUPERSEDE = f"""
    UPDATE notifications n SET status = 'canceled', last_error = 'superseded by {ACTION_REQUIRED}',
           updated_at = now()
     WHERE n.kind = '{PAYMENT_FAILED}' AND n.status = 'pending'
       AND EXISTS (SELECT 1 FROM notifications a WHERE a.kind = '{ACTION_REQUIRED}'
                    AND a.stripe_invoice_id = n.stripe_invoice_id)
       AND n.stripe_invoice_id IN (SELECT stripe_invoice_id FROM stage_invoices)
"""

# Settled invoices, and invoices of subscriptions that ended, need no e-mail any more.
# Rows being sent are left to their worker (its result would otherwise be lost).
CANCEL_REASON = """CASE WHEN i.status = ANY(CAST(:settled AS text[])) THEN 'invoice ' || i.status
                        WHEN i.amount_remaining <= 0 THEN 'nothing owed'
                        ELSE 'subscription ' || s.status END"""
CANCEL_WHEN = """(i.status = ANY(CAST(:settled AS text[])) OR i.amount_remaining <= 0
                  OR s.status = ANY(CAST(:ended AS text[])))"""
_CANCEL = f"""
    WITH touched AS (
        SELECT stripe_invoice_id AS id FROM stage_invoices
        UNION
        SELECT stripe_id FROM stage_gone WHERE object = 'invoice'
        UNION
        SELECT i.stripe_invoice_id FROM invoices i
         WHERE i.stripe_subscription_id IN (
               SELECT stripe_subscription_id FROM stage_subscriptions
               UNION SELECT stripe_id FROM stage_gone WHERE object = 'subscription')
    )
    UPDATE notifications n SET status = 'canceled', last_error = {CANCEL_REASON},
           updated_at = now()
      FROM invoices i LEFT JOIN subscriptions s
           ON s.stripe_subscription_id = i.stripe_subscription_id
     WHERE n.stripe_invoice_id = i.stripe_invoice_id
       AND n.status = 'pending' AND n.kind = ANY(CAST(:email_kinds AS text[]))
       AND i.stripe_invoice_id IN (SELECT id FROM touched)
       AND {CANCEL_WHEN}
"""


@dataclass(frozen=True, slots=True)
class OutboxChanges:
    """What one apply did to the outbox."""

    queued: int = 0
    suppressed: int = 0
    canceled: int = 0


def _params(event_type: str | None, max_age: timedelta) -> dict[str, Any]:
    return {
        "failure_event": event_type in FAILURE_EVENTS,
        "event": event_type or "",
        "max_age": max_age,
        "hold": PAYMENT_FAILED_HOLD,
        "stale_reason": STALE_REASON,
        "ended": list(ENDED_SUBSCRIPTION_STATUSES),
        "settled": list(SETTLED_INVOICE_STATUSES),
        "email_kinds": list(EMAIL_KINDS),
    }


def note_failures(conn: Connection, guard: dict[str, object], *, event_type: str | None) -> None:
    """Date new failures on existing invoices; call before the invoice update."""
    conn.execute(text(_NOTE_FAILURES), {**guard, "failure_event": event_type in FAILURE_EVENTS})


def after_apply(
    conn: Connection, *, event_type: str | None, max_age: timedelta
) -> OutboxChanges:
    """Fill invoice facts, queue what became unpaid, cancel what no longer needs saying."""
    params = _params(event_type, max_age)
    conn.execute(text(_FILL_FACTS), params)
    queued = suppressed = 0
    statements = [_ENQUEUE_PAYMENT_FAILED, _ENQUEUE_UNCOLLECTIBLE, _ENQUEUE_SUBSCRIPTION_CANCELED]
    if event_type == EVENT_ACTION_REQUIRED:
        # Before payment_failed, whose NOT EXISTS then leaves this invoice alone.
        statements.insert(0, _ENQUEUE_ACTION_REQUIRED)
    for sql in statements:
        pending, other = conn.execute(text(sql), params).one()
        queued, suppressed = queued + int(pending), suppressed + int(other)
    canceled = int(conn.execute(text(_SUPERSEDE)).rowcount)
    canceled += int(conn.execute(text(_CANCEL), params).rowcount)
    return OutboxChanges(queued=queued, suppressed=suppressed, canceled=canceled)
