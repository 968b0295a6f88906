"""The pure notification rules: what is unpaid, when it is stale, how retries back off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconcile.notify_policy import backoff, is_stale, should_give_up, unpaid_kind

BASE, CAP = timedelta(seconds=30), timedelta(hours=1)


def test_failed_attempt_on_open_invoice_is_payment_failed() -> None:
    """An open invoice with a failed attempt and money due gets the payment_failed e-mail."""
    assert unpaid_kind(status="open", amount_remaining=100, attempt_count=1) == "payment_failed"


def test_nothing_owed_or_never_attempted_is_not_unpaid() -> None:
    """No money due, or an open invoice nobody tried to charge yet, needs no e-mail."""
    assert unpaid_kind(status="open", amount_remaining=0, attempt_count=2) is None
    assert unpaid_kind(status="open", amount_remaining=100, attempt_count=0) is None
    assert unpaid_kind(status="paid", amount_remaining=0, attempt_count=1) is None


def test_uncollectible_and_events() -> None:
    """Uncollectible counts; the action-required event picks its own kind."""
    assert unpaid_kind(status="uncollectible", amount_remaining=5, attempt_count=0) == (
        "payment_failed")
    assert unpaid_kind(status="open", amount_remaining=5, attempt_count=1,
                       event_type="invoice.payment_action_required") == "action_required"
    assert unpaid_kind(status="open", amount_remaining=5, attempt_count=0,
                       event_type="invoice.payment_failed") == "payment_failed"


def test_is_stale() -> None:
    """Older than the max age is stale; an unknown failure time never is."""
    now = datetime(2026, 12, 4, tzinfo=UTC)
    assert is_stale(now - timedelta(hours=73), now, timedelta(hours=72))
    assert not is_stale(now - timedelta(hours=71), now, timedelta(hours=72))
    assert not is_stale(None, now, timedelta(hours=72))


def test_backoff_doubles_within_jitter_bounds_and_caps() -> None:
    """Each retry waits between half and all of base * 2^(n-1), never more than the cap."""
    assert backoff(1, base=BASE, cap=CAP, jitter=0.0) == timedelta(seconds=15)
    assert backoff(1, base=BASE, cap=CAP, jitter=0.999) < timedelta(seconds=30)
    assert backoff(3, base=BASE, cap=CAP, jitter=0.0) == timedelta(seconds=60)
    assert backoff(40, base=BASE, cap=CAP, jitter=0.5) == timedelta(minutes=45)
    with pytest.raises(ValueError):
        backoff(0, base=BASE, cap=CAP, jitter=0.0)
    with pytest.raises(ValueError):
        backoff(1, base=BASE, cap=CAP, jitter=1.0)


def test_should_give_up() -> None:
    """The row is failed once it has used every allowed attempt."""
    assert not should_give_up(7, 8)
    assert should_give_up(8, 8)
