"""The pure retry rules: eligibility table, due times, idempotency keys, policy guard rails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconcile.retry_policy import (
    decide,
    due_at,
    event_type_for,
    facts_from_payloads,
    idempotency_key,
    locally_canceled,
    policy_refusal,
)
from tests import payloads as p

NOW = datetime.fromtimestamp(p.T0, tz=UTC) + timedelta(days=10)
DAY = 86400
SCHEDULE = (timedelta(days=1), timedelta(days=3), timedelta(days=5), timedelta(days=7))


def _invoice(**changes: Any) -> dict[str, Any]:
    """An open, failed, charge-automatically invoice finalized at T0."""
    payload = p.invoice("in_1", "cus_1", "sub_1", status="open", amount_remaining=1500)
    payload.update(collection_method="charge_automatically",
                   status_transitions={"finalized_at": p.T0})
    payload.update(changes)
    return payload


def _subscription(**changes: Any) -> dict[str, Any]:
    payload = p.subscription("sub_1", "cus_1", status="past_due", period_end=p.T0 + 30 * DAY)
    payload.update(changes)
    return payload


CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any], str]] = [
    # (name, invoice changes, subscription changes or None for no subscription, extras, reason)
    ("past_due is charged", {}, {}, {}, "eligible"),
    ("active is charged", {}, {"status": "active"}, {}, "eligible"),
    ("paid invoice", {"status": "paid", "amount_remaining": 0}, {}, {}, "invoice_paid"),
    ("void invoice", {"status": "void"}, {}, {}, "invoice_void"),
    ("draft invoice", {"status": "draft"}, {}, {}, "invoice_not_open"),
    ("uncollectible invoice", {"status": "uncollectible"}, {}, {}, "invoice_not_open"),
    ("zero amount due", {"amount_due": 0, "amount_remaining": 0}, {}, {}, "zero_amount"),
    ("nothing remaining", {"amount_remaining": 0}, {}, {}, "zero_amount"),
    ("send_invoice", {"collection_method": "send_invoice"}, {}, {}, "not_charge_automatically"),
    ("one-off invoice", {}, None, {}, "no_subscription"),
    ("canceled locally", {}, {}, {"canceled_locally": True}, "canceled_locally"),
    ("canceled", {}, {"status": "canceled"}, {}, "subscription_status"),
    ("unpaid", {}, {"status": "unpaid"}, {}, "subscription_status"),
    ("paused", {}, {"status": "paused"}, {}, "subscription_status"),
    ("incomplete_expired", {}, {"status": "incomplete_expired"}, {}, "subscription_status"),
    ("incomplete", {}, {"status": "incomplete"}, {}, "subscription_status"),
    ("trialing", {}, {"status": "trialing"}, {}, "subscription_status"),
    ("collection paused", {}, {"pause_collection": {"behavior": "void"}}, {},
     "collection_paused"),
    ("cancel at period end, period over",
     {}, {"cancel_at_period_end": True,
          "items": p.subscription("sub_1", "cus_1", period_end=p.T0 + 5 * DAY)["items"]},
     {}, "subscription_ended"),
    ("cancel at period end, period running", {}, {"cancel_at_period_end": True}, {},
     "eligible"),
    ("cancel_at passed", {}, {"cancel_at": p.T0 + 9 * DAY}, {}, "subscription_ended"),
    ("never attempted", {"attempt_count": 0}, {}, {}, "never_attempted"),
    ("Stripe retry scheduled", {"next_payment_attempt": p.T0 + 11 * DAY}, {}, {},
     "stripe_retry_scheduled"),
    ("schedule used up", {}, {}, {"attempts_made": 4}, "schedule_exhausted"),
    ("next slot not yet", {}, {}, {"attempts_made": 3, "now": NOW - timedelta(days=4)},
     "not_due"),
]


@pytest.mark.parametrize(
    ("invoice", "subscription", "extra", "reason"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES],
)
def test_eligibility_table(
    invoice: dict[str, Any], subscription: dict[str, Any] | None, extra: dict[str, Any],
    reason: str,
) -> None:
    """Each row of the README's table gives its reason; only active/past_due are charged."""
    sub = _subscription(**subscription) if subscription is not None else None
    facts = facts_from_payloads(
        _invoice(**invoice), NOW, sub, NOW if sub else None,
        canceled_locally=extra.get("canceled_locally", False),
    )
    decision = decide(
        facts, attempts_made=extra.get("attempts_made", 0), schedule=SCHEDULE,
        now=extra.get("now", NOW),
    )
    assert decision.reason == reason
    assert decision.eligible is (reason == "eligible")


def test_first_rule_wins_paid_beats_everything() -> None:
    """An invoice already paid is reported as paid even when its subscription is canceled."""
    facts = facts_from_payloads(
        _invoice(status="paid"), NOW, _subscription(status="canceled"), NOW,
        canceled_locally=True,
    )
    assert decide(facts, attempts_made=0, schedule=SCHEDULE, now=NOW).reason == "invoice_paid"


@pytest.mark.parametrize(
    ("made", "expected"),
    [(0, timedelta(days=1)), (1, timedelta(days=3)), (3, timedelta(days=7)), (4, None)],
)
def test_due_at_counts_offsets_from_the_first_failure(
    made: int, expected: timedelta | None
) -> None:
    """Retry n is due at first failure + the n-th offset; none after the last offset."""
    first = datetime(2026, 5, 1, tzinfo=UTC)
    found = due_at(first, made, SCHEDULE)
    assert found == (first + expected if expected is not None else None)


def test_zero_offset_means_due_at_once() -> None:
    """A `0d` offset is due as soon as the first failure happened, i.e. at the next run."""
    first = datetime(2026, 5, 1, tzinfo=UTC)
    assert due_at(first, 0, (timedelta(0), timedelta(days=2))) == first


def test_first_failure_is_finalization_else_creation() -> None:
    """The anchor is status_transitions.finalized_at, falling back to `created`."""
    finalized = facts_from_payloads(_invoice(), NOW, _subscription(), NOW, canceled_locally=False)
    assert finalized.first_failed_at == datetime.fromtimestamp(p.T0, tz=UTC)
    bare = facts_from_payloads(
        _invoice(status_transitions=None, created=p.T0 - DAY), NOW, _subscription(), NOW,
        canceled_locally=False,
    )
    assert bare.first_failed_at == datetime.fromtimestamp(p.T0 - DAY, tz=UTC)


def test_due_boundary_is_inclusive() -> None:
    """At exactly the due time the invoice is charged; a second earlier it is not."""
    facts = facts_from_payloads(_invoice(), NOW, _subscription(), NOW, canceled_locally=False)
    due = datetime.fromtimestamp(p.T0, tz=UTC) + SCHEDULE[0]
    assert decide(facts, attempts_made=0, schedule=SCHEDULE, now=due).eligible
    early = decide(facts, attempts_made=0, schedule=SCHEDULE, now=due - timedelta(seconds=1))
    assert early.reason == "not_due" and early.due_at == due


def test_idempotency_key_is_deterministic_per_invoice_and_attempt() -> None:
    """The same invoice and attempt give the same key; another attempt or invoice another."""
    assert idempotency_key("in_1", 1) == idempotency_key("in_1", 1)
    keys = {idempotency_key("in_1", 1), idempotency_key("in_1", 2), idempotency_key("in_2", 1)}
    assert len(keys) == 3
    assert all(len(k) <= 255 for k in keys)
    with pytest.raises(ValueError):
        idempotency_key("in_1", 0)


@pytest.mark.parametrize(
    ("policy", "explicit", "livemode", "schedule", "dry_run", "refused"),
    [
        ("custom", True, True, SCHEDULE, False, None),
        ("custom", True, False, SCHEDULE, False, None),
        ("custom", True, True, SCHEDULE, True, None),
        ("stripe", False, True, (), False, "refusing live-mode charges"),
        ("stripe", False, False, (), False, "RETRY_POLICY=stripe (the default)"),
        ("stripe", False, True, (), True, "RETRY_POLICY=stripe (the default)"),
        ("stripe", True, False, (), False, "RETRY_POLICY=stripe:"),
        ("stripe", True, True, (), False, "RETRY_POLICY=stripe:"),
        ("custom", True, False, (), False, "RETRY_SCHEDULE is not set"),
    ],
)
def test_policy_guard_rails(
    policy: str, explicit: bool, livemode: bool, schedule: tuple[timedelta, ...],
    dry_run: bool, refused: str | None,
) -> None:
    """Only RETRY_POLICY=custom charges; a live key with the policy unset gets its own refusal."""
    found = policy_refusal(
        policy=policy, explicit=explicit, livemode=livemode, schedule=schedule, dry_run=dry_run
    )
    assert (found is None) if refused is None else (found is not None and refused in found)


def test_local_state_and_event_mapping() -> None:
    """Unknown or ended local subscriptions count as canceled; outcomes map to Stripe events."""
    assert locally_canceled(None) and locally_canceled("canceled")
    assert not locally_canceled("past_due")
    assert event_type_for("declined") == "invoice.payment_failed"
    assert event_type_for("requires_action") == "invoice.payment_action_required"
    assert event_type_for("processing") is None
