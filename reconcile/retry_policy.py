"""Who may be charged again, when, and under which idempotency key.  [pure]

`RETRY_SCHEDULE` lists offsets from an invoice's first failed payment (`1d,3d,5d,7d`: a day
after it, then three days after it, ...; `0d` means at the next run). Stripe attempts the
first payment when it finalizes a charge-automatically invoice, so the first failure is
`status_transitions.finalized_at`. The SQL pre-selection in `reconcile.retries` uses the
invoice's `created` instead (never later than the finalization), so it selects a superset of
what `decide` then allows on state fetched fresh from Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from reconcile.policy import TERMINAL_SUBSCRIPTION_STATUSES
from reconcile.snapshot import (
    InvoiceState,
    SubscriptionState,
    epoch,
    invoice_from_payload,
    subscription_from_payload,
)

# Only these subscriptions are charged: `unpaid`, `paused`, `incomplete(_expired)`,
# `canceled` and `trialing` (nothing is owed yet) are left alone.
CHARGEABLE_SUBSCRIPTION_STATUSES: tuple[str, ...] = ("active", "past_due")

# Outcomes of a charge attempt that count as an attempt made (they use a schedule slot).
MADE_OUTCOMES: tuple[str, ...] = (
    "succeeded", "processing", "declined", "requires_action", "failed",
)
# A row written before the request is sent; a crash leaves it, the next run resends its key.
PENDING = "pending"
# A pending row whose invoice was no longer chargeable on the rerun (nothing was sent again).
ABANDONED = "abandoned"

Reason = Literal[
    "eligible", "invoice_paid", "invoice_void", "invoice_not_open", "zero_amount",
    "not_charge_automatically", "no_subscription", "canceled_locally", "subscription_status",
    "collection_paused", "subscription_ended", "never_attempted", "stripe_retry_scheduled",
    "schedule_exhausted", "not_due",
]

_KEY_PREFIX = "stripe-reconcile-retry"


@dataclass(frozen=True, slots=True)
class ChargeFacts:
    """Everything eligibility depends on, read from fresh Stripe payloads and our database."""

    invoice: InvoiceState
    subscription: SubscriptionState | None
    collection_method: str | None
    first_failed_at: datetime | None
    collection_paused: bool
    canceled_locally: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to charge now, or the reason not to (with a detail such as the status)."""

    reason: Reason
    due_at: datetime | None
    detail: str | None = None

    @property
    def eligible(self) -> bool:
        """True when the invoice should be charged now."""
        return self.reason == "eligible"


def facts_from_payloads(
    invoice: Mapping[str, Any], invoice_observed_at: datetime,
    subscription: Mapping[str, Any] | None, subscription_observed_at: datetime | None,
    *, canceled_locally: bool,
) -> ChargeFacts:
    """Normalise an invoice (and its subscription) as just retrieved from Stripe."""
    transitions = invoice.get("status_transitions")
    finalized = transitions.get("finalized_at") if isinstance(transitions, Mapping) else None
    sub_state = None
    paused = False
    if subscription is not None:
        sub_state = subscription_from_payload(
            subscription, subscription_observed_at or invoice_observed_at
        )
        paused = subscription.get("pause_collection") is not None
    inv_state = invoice_from_payload(invoice, invoice_observed_at)
    return ChargeFacts(
        invoice=inv_state,
        subscription=sub_state,
        collection_method=invoice.get("collection_method"),
        first_failed_at=epoch(finalized) or inv_state.created,
        collection_paused=paused,
        canceled_locally=canceled_locally,
    )


def due_at(
    first_failed_at: datetime, attempts_made: int, schedule: Sequence[timedelta]
) -> datetime | None:
    """When retry number `attempts_made + 1` is due; None once the schedule is used up."""
    if attempts_made < 0:
        raise ValueError("attempts_made must be >= 0")
    if attempts_made >= len(schedule):
        return None
    return first_failed_at + schedule[attempts_made]


def _refusal(facts: ChargeFacts, now: datetime) -> tuple[Reason, str | None] | None:
    """The first rule that forbids charging, in the order the README's table lists them."""
    inv, sub = facts.invoice, facts.subscription
    if inv.status != "open":
        named: dict[str, Reason] = {"paid": "invoice_paid", "void": "invoice_void"}
        return named.get(inv.status, "invoice_not_open"), inv.status
    if inv.amount_due <= 0 or inv.amount_remaining <= 0:
        return "zero_amount", None
    if facts.collection_method != "charge_automatically":
        return "not_charge_automatically", facts.collection_method
    if sub is None:
        return "no_subscription", None
    if facts.canceled_locally:
        return "canceled_locally", None
    if sub.status not in CHARGEABLE_SUBSCRIPTION_STATUSES:
        return "subscription_status", sub.status
    if facts.collection_paused:
        return "collection_paused", None
    period_over = sub.current_period_end is not None and sub.current_period_end <= now
    if (sub.cancel_at_period_end and period_over) or (
        sub.end_date is not None and sub.end_date <= now
    ):
        return "subscription_ended", None
    if inv.attempt_count < 1:
        return "never_attempted", None
    if inv.next_payment_attempt is not None:
        # Stripe's own retries (Smart Retries or a schedule) are still on for this invoice:
        # charging too would double the attempts the customer sees.
        return "stripe_retry_scheduled", inv.next_payment_attempt.isoformat()
    return None


def decide(
    facts: ChargeFacts, *, attempts_made: int, schedule: Sequence[timedelta], now: datetime
) -> Decision:
    """Charge now, or the reason not to. `now` should be Stripe's clock (a response Date)."""
    refused = _refusal(facts, now)
    if refused is not None:
        return Decision(reason=refused[0], due_at=None, detail=refused[1])
    first = facts.first_failed_at or facts.invoice.observed_at
    due = due_at(first, attempts_made, schedule)
    if due is None:
        return Decision(reason="schedule_exhausted", due_at=None)
    if now < due:
        return Decision(reason="not_due", due_at=due)
    return Decision(reason="eligible", due_at=due)


def policy_refusal(
    *, policy: str, explicit: bool, livemode: bool, schedule: Sequence[timedelta], dry_run: bool
) -> str | None:
    """Why `retry-payments` must not run with these settings; None when it may.

    A live key never starts charging because of a default: an unset RETRY_POLICY gets its
    own refusal. Only RETRY_POLICY=custom (which requires RETRY_SCHEDULE) charges; a dry run
    needs the schedule too, to compute what is due.
    """
    if livemode and not explicit and not dry_run:
        return (
            "refusing live-mode charges: RETRY_POLICY is unset; set RETRY_POLICY=custom and "
            "RETRY_SCHEDULE to let this job charge customers"
        )
    if policy != "custom":
        shown = f"{policy} (the default)" if not explicit else policy
        return (
            f"RETRY_POLICY={shown}: Stripe retries failed payments itself; set "
            "RETRY_POLICY=custom and RETRY_SCHEDULE (and turn Stripe's retries off) to retry "
            "with this job"
        )
    if not schedule:
        return "RETRY_SCHEDULE is not set; list the retry delays, e.g. RETRY_SCHEDULE=1d,3d,5d,7d"
    return None


def locally_canceled(local_status: str | None) -> bool:
    """A subscription we already hold as ended is never charged, whatever Stripe says now."""
    return local_status is None or local_status in TERMINAL_SUBSCRIPTION_STATUSES


def idempotency_key(invoice_id: str, attempt: int) -> str:
    """The same invoice and attempt always give the same key, so a rerun replays, never repays.

    Stripe keeps keys for 24 hours; beyond that the invoice's own state (paid, or a pending
    attempt row) is what stops a second charge.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not invoice_id:
        raise ValueError("invoice_id must not be empty")
    return f"{_KEY_PREFIX}:{invoice_id}:{attempt}"


def event_type_for(outcome: str) -> str | None:
    """The Stripe event an outcome amounts to, so apply's notification rules treat it alike."""
    return {
        "declined": "invoice.payment_failed",
        "failed": "invoice.payment_failed",
        "requires_action": "invoice.payment_action_required",
        "succeeded": "invoice.paid",
    }.get(outcome)
