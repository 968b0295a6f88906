"""Payment retries end to end: real PostgreSQL, the real gateway, a Stripe fake over HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from reconcile import retry_store
from reconcile.errors import (
    AccountMismatchError,
    LockHeldError,
    SafetyValveError,
    StripeUnavailableError,
)
from reconcile.retries import RetryOptions, RetryResult, run_retries
from reconcile.retry_policy import idempotency_key
from reconcile.retry_store import RETRY_LOCK_KEY
from tests import payloads as p
from tests.dbutil import invoice_row, subscription_row
from tests.test_retry_fake import Payments, gateway, seed, stripe_payments

__all__ = ["stripe_payments"]  # the fixture, imported for pytest

OPTIONS = RetryOptions(schedule=(timedelta(days=1), timedelta(days=3)))
DECLINE = ("card_declined", "insufficient_funds")


def _run(engine: Engine, payments: Payments, options: RetryOptions = OPTIONS) -> RetryResult:
    return run_retries(engine, gateway(), options, clock=lambda: payments.fake.now)


def _attempts(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT stripe_invoice_id, attempt, outcome, error_code, decline_code, replayed "
            "FROM payment_attempts ORDER BY stripe_invoice_id, attempt"))]


def _ended_period() -> dict[str, Any]:
    return {"cancel_at_period_end": True,
            "items": p.subscription("x", "y", period_end=p.T0)["items"]}


@pytest.mark.parametrize(
    ("seeded", "charged", "reason"),
    [
        ({}, True, None),
        ({"stripe_status": "active", "local_status": "active"}, True, None),
        ({"stripe_status": "canceled"}, False, "subscription_status"),
        ({"stripe_status": "unpaid"}, False, "subscription_status"),
        ({"stripe_status": "paused"}, False, "subscription_status"),
        ({"stripe_status": "incomplete_expired"}, False, "subscription_status"),
        ({"sub": _ended_period()}, False, "subscription_ended"),
        ({"invoice": {"status": "paid", "amount_remaining": 0}}, False, "invoice_paid"),
        ({"invoice": {"status": "void"}}, False, "invoice_void"),
        ({"invoice": {"amount_due": 0, "amount_remaining": 0}}, False, "zero_amount"),
        ({"local_status": "canceled"}, False, None),
    ],
    ids=["past_due", "active", "canceled", "unpaid", "paused", "incomplete_expired",
         "period-ended", "paid", "void", "zero", "canceled-locally"],
)
def test_policy_table_against_stripe(
    engine: Engine, stripe_payments: Payments, seeded: dict[str, Any], charged: bool,
    reason: str | None,
) -> None:
    """Only active/past_due subscriptions with an open, owing invoice are charged."""
    inv = seed(engine, stripe_payments.fake, "sub_t", **seeded)
    result = _run(engine, stripe_payments)
    assert stripe_payments.charges == ([inv] if charged else [])
    if charged:
        assert result.outcomes == {"succeeded": 1}
        assert _attempts(engine) == [(inv, 1, "succeeded", None, None, False)]
        assert invoice_row(engine, inv)["status"] == "paid"
        assert subscription_row(engine, "sub_t")["status"] == "active"
    else:
        assert _attempts(engine) == []
        assert [s.reason for s in result.skipped] == ([reason] if reason else [])


def test_decline_is_recorded_notified_and_the_run_continues(
    engine: Engine, stripe_payments: Payments
) -> None:
    """A card decline is an outcome: recorded with its codes, queued for e-mail, run goes on."""
    first = seed(engine, stripe_payments.fake, "sub_a")
    second = seed(engine, stripe_payments.fake, "sub_b")
    stripe_payments.declines[first] = [DECLINE]
    result = _run(engine, stripe_payments)
    assert result.outcomes == {"declined": 1, "succeeded": 1}
    assert _attempts(engine) == [
        (first, 1, "declined", *DECLINE, False), (second, 1, "succeeded", None, None, False)]
    assert invoice_row(engine, first)["attempt_count"] == 2
    with engine.connect() as conn:
        queued = conn.execute(text(
            "SELECT kind, status, recipient FROM notifications WHERE stripe_invoice_id = :i"),
            {"i": first}).all()
    assert [tuple(r) for r in queued] == [("payment_failed", "pending", "sub_a@example.com")]


def test_rerun_after_a_crash_resends_the_same_key_and_charges_once(
    engine: Engine, stripe_payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the charge leaves a pending row; the rerun's same key gets a replay."""
    inv = seed(engine, stripe_payments.fake, "sub_c")
    stripe_payments.declines[inv] = [DECLINE]

    def power_cut(*args: object, **kwargs: object) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(retry_store, "settle", power_cut)
        with pytest.raises(RuntimeError):
            _run(engine, stripe_payments)
    assert _attempts(engine) == [(inv, 1, "pending", None, None, False)]
    stripe_payments.fake.tick()
    result = _run(engine, stripe_payments)
    assert stripe_payments.keys == [idempotency_key(inv, 1)] * 2
    assert stripe_payments.charges == [inv]
    assert result.outcomes == {"declined": 1}
    assert _attempts(engine) == [(inv, 1, "declined", *DECLINE, True)]
    stripe_payments.fake.tick()
    assert _run(engine, stripe_payments).attempts == ()  # the 3d slot is not due yet


def test_crash_after_a_successful_charge_is_resolved_not_repaid(
    engine: Engine, stripe_payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the crashed charge went through, the rerun learns it by replay and records it."""
    inv = seed(engine, stripe_payments.fake, "sub_d")
    with monkeypatch.context() as patch:
        patch.setattr(retry_store, "settle", lambda *a, **k: (_ for _ in ()).throw(OSError()))
        with pytest.raises(OSError):
            _run(engine, stripe_payments)
    stripe_payments.fake.tick()
    result = _run(engine, stripe_payments)
    assert stripe_payments.charges == [inv] and len(stripe_payments.keys) == 2
    assert result.outcomes == {"succeeded": 1}
    assert _attempts(engine) == [(inv, 1, "succeeded", None, None, True)]
    assert invoice_row(engine, inv)["status"] == "paid"


def test_crashed_attempt_of_a_since_canceled_subscription_is_abandoned(
    engine: Engine, stripe_payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open invoice no longer chargeable is never sent again; its pending row is closed."""
    inv = seed(engine, stripe_payments.fake, "sub_e")
    stripe_payments.declines[inv] = [DECLINE]
    with monkeypatch.context() as patch:
        patch.setattr(retry_store, "settle", lambda *a, **k: (_ for _ in ()).throw(OSError()))
        with pytest.raises(OSError):
            _run(engine, stripe_payments)
    stripe_payments.fake.subscriptions["sub_e"]["status"] = "canceled"
    stripe_payments.fake.tick()
    result = _run(engine, stripe_payments)
    assert len(stripe_payments.keys) == 1
    assert [s.reason for s in result.skipped] == ["subscription_status"]
    assert _attempts(engine) == [(inv, 1, "abandoned", None, None, False)]
    assert subscription_row(engine, "sub_e")["status"] == "canceled"


def test_stripe_failing_mid_run_stops_it_and_keeps_the_key(
    engine: Engine, stripe_payments: Payments
) -> None:
    """An unknown outcome stops the run; earlier attempts stay, the key waits for the rerun."""
    earlier = int((stripe_payments.fake.now - timedelta(days=3)).timestamp())
    first = seed(engine, stripe_payments.fake, "sub_k1", invoice={"created": earlier})
    second = seed(engine, stripe_payments.fake, "sub_k2")
    stripe_payments.unavailable.add(second)
    with pytest.raises(StripeUnavailableError):
        _run(engine, stripe_payments)
    assert _attempts(engine) == [(first, 1, "succeeded", None, None, False),
                                 (second, 1, "pending", None, None, False)]
    stripe_payments.unavailable.clear()
    stripe_payments.fake.tick()
    assert _run(engine, stripe_payments).outcomes == {"succeeded": 1}
    assert stripe_payments.keys[-1] == idempotency_key(second, 1)


def test_dry_run_charges_and_writes_nothing(engine: Engine, stripe_payments: Payments) -> None:
    """--dry-run lists what would be charged; no POST, no attempt row."""
    seed(engine, stripe_payments.fake, "sub_f")
    result = _run(engine, stripe_payments, RetryOptions(schedule=OPTIONS.schedule, dry_run=True))
    assert result.outcomes == {"would_charge": 1}
    assert stripe_payments.keys == [] and _attempts(engine) == []


def test_max_charges_refuses_the_whole_run(engine: Engine, stripe_payments: Payments) -> None:
    """More due invoices than --max-charges: nothing is charged at all (exit 5)."""
    seed(engine, stripe_payments.fake, "sub_g")
    seed(engine, stripe_payments.fake, "sub_h")
    options = RetryOptions(schedule=OPTIONS.schedule, max_charges=1)
    with pytest.raises(SafetyValveError, match="--max-charges=1"):
        _run(engine, stripe_payments, options)
    assert stripe_payments.keys == [] and _attempts(engine) == []


def test_second_run_waits_for_the_lock(
    engine: Engine, db_url: str, stripe_payments: Payments
) -> None:
    """A run while another holds the retry lock exits at once (4) and charges nothing."""
    seed(engine, stripe_payments.fake, "sub_i")
    holder = create_engine(db_url)
    with holder.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RETRY_LOCK_KEY})
        with pytest.raises(LockHeldError):
            _run(engine, stripe_payments)
    holder.dispose()
    assert stripe_payments.keys == []


def test_key_of_another_account_is_refused(engine: Engine, stripe_payments: Payments) -> None:
    """A database that mirrors another Stripe account is never charged through this key."""
    seed(engine, stripe_payments.fake, "sub_j")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO reconcile_account (stripe_account_id, livemode) "
                          "VALUES ('acct_other', false)"))
    with pytest.raises(AccountMismatchError):
        _run(engine, stripe_payments)
    assert stripe_payments.keys == []
