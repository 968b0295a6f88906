"""Who is told what about a failed payment, and when to try again.  [pure]

The rules are data and small functions so the set-based SQL in `reconcile.outbox` can use
the very lists the unit tests check (passed as parameters), like `reconcile.policy`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

Kind = Literal[
    "payment_failed", "action_required", "invoice_uncollectible", "subscription_canceled"
]

PAYMENT_FAILED: Kind = "payment_failed"
ACTION_REQUIRED: Kind = "action_required"
INVOICE_UNCOLLECTIBLE: Kind = "invoice_uncollectible"
SUBSCRIPTION_CANCELED: Kind = "subscription_canceled"

# Kinds that e-mail the customer; the others only raise an operator alert when drained.
EMAIL_KINDS: tuple[Kind, ...] = (PAYMENT_FAILED, ACTION_REQUIRED)
ALERT_ONLY_KINDS: tuple[Kind, ...] = (INVOICE_UNCOLLECTIBLE, SUBSCRIPTION_CANCELED)

EVENT_PAYMENT_FAILED = "invoice.payment_failed"
EVENT_ACTION_REQUIRED = "invoice.payment_action_required"
# Events whose `created` is the moment a payment attempt failed.
FAILURE_EVENTS: tuple[str, ...] = (EVENT_PAYMENT_FAILED, EVENT_ACTION_REQUIRED)

# An invoice in one of these states is settled: nothing is owed any more (`deleted` is how
# we mark an invoice Stripe confirmed gone).
SETTLED_INVOICE_STATUSES: tuple[str, ...] = ("paid", "void", "deleted")
# A subscription in one of these has ended; asking for its payment makes no sense.
ENDED_SUBSCRIPTION_STATUSES: tuple[str, ...] = ("canceled", "incomplete_expired")

# Stripe fires payment_failed and payment_action_required together for a renewal that needs
# 3-D Secure; a short hold lets the more specific e-mail replace the generic one.
PAYMENT_FAILED_HOLD = timedelta(minutes=2)


def unpaid_kind(
    *, status: str, amount_remaining: int, attempt_count: int, event_type: str | None = None
) -> Kind | None:
    """The e-mail an invoice in this state deserves, or None when it is not unpaid.

    Mirrors `outbox._ENQUEUE_*`: a failed attempt on an open invoice, an uncollectible
    invoice, or a failure event about an invoice still owing money.
    """
    if amount_remaining <= 0:
        return None
    if event_type == EVENT_ACTION_REQUIRED and status == "open":
        return ACTION_REQUIRED
    if status == "uncollectible":
        return PAYMENT_FAILED
    if status == "open" and (attempt_count >= 1 or event_type == EVENT_PAYMENT_FAILED):
        return PAYMENT_FAILED
    return None


def is_stale(failed_at: datetime | None, now: datetime, max_age: timedelta) -> bool:
    """True when a failure is too old to e-mail about (unknown times are not stale)."""
    return failed_at is not None and failed_at < now - max_age


def backoff(attempt: int, *, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Delay before retry number `attempt` (1 = after the first failure).

    Exponential from `base`, capped at `cap`, and spread by `jitter` in [0, 1): the delay is
    between half and all of the exponential value ("equal jitter"), so retries of many rows
    that failed together do not hit the provider together again, yet never retry at once.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    exponential = min(cap, base * (1 << min(attempt - 1, 32)))
    return exponential / 2 + (exponential / 2) * jitter


def should_give_up(attempts: int, max_attempts: int) -> bool:
    """True when a row has used every attempt it is allowed."""
    return attempts >= max_attempts
