"""The drain's SQL and the rows it reads, kept apart from the sending logic in notify.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconcile.mail.render import InvoiceFacts
from reconcile.notify_policy import (
    ACTION_REQUIRED,
    EMAIL_KINDS,
    ENDED_SUBSCRIPTION_STATUSES,
    PAYMENT_FAILED,
    SETTLED_INVOICE_STATUSES,
)
from reconcile.outbox import CANCEL_REASON, CANCEL_WHEN, STALE_REASON

_INVOICE_COLUMNS = (
    "stripe_subscription_id", "status", "amount_remaining", "currency", "attempt_count",
    "next_payment_attempt", "hosted_invoice_url", "product_name", "stripe_product_id",
)

# Run before every claim, each one set-based. The apply path already cancels on the change
# that settles an invoice; this catches rows queued by a transaction that raced with it.
HOUSEKEEPING: tuple[tuple[str, str], ...] = (
    ("canceled", f"""
        UPDATE notifications n SET status = 'canceled', last_error = {CANCEL_REASON},
               updated_at = now()
          FROM invoices i LEFT JOIN subscriptions s
               ON s.stripe_subscription_id = i.stripe_subscription_id
         WHERE n.stripe_invoice_id = i.stripe_invoice_id AND n.status = 'pending'
           AND n.kind = ANY(CAST(:email_kinds AS text[])) AND {CANCEL_WHEN}
        RETURNING n.id"""),
    ("canceled", f"""
        UPDATE notifications n SET status = 'canceled',
               last_error = 'superseded by {ACTION_REQUIRED}', updated_at = now()
         WHERE n.kind = '{PAYMENT_FAILED}' AND n.status = 'pending'
           AND EXISTS (SELECT 1 FROM notifications a WHERE a.kind = '{ACTION_REQUIRED}'
                        AND a.stripe_invoice_id = n.stripe_invoice_id)
        RETURNING n.id"""),
    # An outbox that was not drained for days must not send news that old.
    ("suppressed", """
        UPDATE notifications SET status = 'suppressed', last_error = :stale_reason,
               updated_at = now()
         WHERE status = 'pending' AND failed_at < CAST(:now AS timestamptz) - :max_age
        RETURNING id"""),
    # A row whose worker died on its last allowed attempt is not tried again.
    ("failed", """
        UPDATE notifications SET status = 'failed', claim_token = NULL, updated_at = now(),
               last_error = 'worker lease expired on the last attempt'
         WHERE status = 'sending' AND next_attempt_at <= :now AND attempts >= :max_attempts
        RETURNING id, kind, stripe_invoice_id, attempts"""),
)

# Expired leases count as due: their worker is presumed dead.
CLAIM = """
    WITH due AS (
        SELECT id FROM notifications
         WHERE status IN ('pending', 'sending') AND next_attempt_at <= :now
         ORDER BY next_attempt_at, id
         LIMIT :limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE notifications n SET status = 'sending', attempts = n.attempts + 1,
           next_attempt_at = :lease_until, claim_token = :token, updated_at = now()
      FROM due WHERE n.id = due.id
    RETURNING n.id, n.kind, n.stripe_invoice_id, n.stripe_customer_id, n.recipient, n.attempts
"""

FACTS = f"""
    SELECT stripe_invoice_id, {", ".join(_INVOICE_COLUMNS)}
      FROM invoices WHERE stripe_invoice_id = ANY(CAST(:ids AS text[]))
"""

# Only the claimant may record a result: a worker that outlived its lease must not
# overwrite what the worker that took over recorded.
FINISH = """
    UPDATE notifications SET status = :status,
           next_attempt_at = COALESCE(CAST(:next_attempt_at AS timestamptz), next_attempt_at),
           last_error = :error, provider_message_id = :message_id,
           sent_at = CAST(:sent_at AS timestamptz), claim_token = NULL, updated_at = now()
     WHERE id = :id AND claim_token = :token AND status = 'sending'
"""

RELEASE = """
    UPDATE notifications SET status = 'pending', attempts = attempts - 1, next_attempt_at = :now,
           last_error = :error, claim_token = NULL, updated_at = now()
     WHERE id = ANY(CAST(:ids AS bigint[])) AND claim_token = :token AND status = 'sending'
"""

PREVIEW = f"""
    SELECT n.id, n.kind, n.stripe_invoice_id, n.stripe_customer_id, n.recipient, n.attempts,
           {", ".join("i." + c for c in _INVOICE_COLUMNS)}
      FROM notifications n LEFT JOIN invoices i ON i.stripe_invoice_id = n.stripe_invoice_id
     WHERE n.status IN ('pending', 'sending') AND n.next_attempt_at <= :now
     ORDER BY n.next_attempt_at, n.id
     LIMIT :limit
"""


def housekeeping_params(now: datetime, max_age: timedelta, max_attempts: int) -> dict[str, Any]:
    """Bind parameters of the HOUSEKEEPING statements."""
    return {
        "now": now,
        "max_age": max_age,
        "max_attempts": max_attempts,
        "stale_reason": STALE_REASON,
        "email_kinds": list(EMAIL_KINDS),
        "settled": list(SETTLED_INVOICE_STATUSES),
        "ended": list(ENDED_SUBSCRIPTION_STATUSES),
    }


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    """The invoice columns an e-mail or alert needs, as they are now."""

    stripe_subscription_id: str | None
    status: str
    amount_remaining: int
    currency: str
    attempt_count: int
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None
    product_name: str | None
    stripe_product_id: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed outbox row; `token` proves the claim when recording the result."""

    id: int
    kind: str
    stripe_invoice_id: str
    stripe_customer_id: str
    recipient: str | None
    attempts: int
    token: str
    invoice: InvoiceRow | None

    @classmethod
    def of(cls, row: Mapping[Any, Any], invoice: Mapping[Any, Any] | None, token: str) -> Claimed:
        """Build from a CLAIM (or PREVIEW) row and its FACTS row (None: invoice missing)."""
        return cls(
            id=int(row["id"]), kind=str(row["kind"]),
            stripe_invoice_id=str(row["stripe_invoice_id"]),
            stripe_customer_id=str(row["stripe_customer_id"]),
            recipient=row["recipient"], attempts=int(row["attempts"]), token=token,
            invoice=None if invoice is None else InvoiceRow(
                **{c: invoice[c] for c in _INVOICE_COLUMNS}
            ),
        )

    def invoice_facts(self) -> InvoiceFacts:
        """What the e-mail says (the invoice must be known)."""
        inv = self.invoice
        assert inv is not None
        return InvoiceFacts(
            kind=self.kind, stripe_invoice_id=self.stripe_invoice_id, status=inv.status,
            amount_remaining=int(inv.amount_remaining), currency=inv.currency,
            product_name=inv.product_name, next_payment_attempt=inv.next_payment_attempt,
            hosted_invoice_url=inv.hosted_invoice_url,
        )
