"""The Stripe emulator's clock: renewals, failed-payment retries, expiries and trials."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from reconcile.emulator import RetryPolicy, StripeEmulator

START = 1_800_000_000
DAY = 86_400



def test_renewal_bills_the_next_period(emu: StripeEmulator) -> None:
    """At period end a new invoice is created, finalized and paid, and the period rolls."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    end = sub["items"]["data"][0]["current_period_end"]
    emu.advance_to(end)
    renewed = emu.get(sub["id"])
    item = renewed["items"]["data"][0]
    assert (item["current_period_start"], renewed["status"]) == (end, "active")
    invoice = emu.get(renewed["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_cycle" and invoice["status"] == "paid"
    assert invoice["lines"]["data"][0]["period"] == {
        "start": end,
        "end": item["current_period_end"],
    }


def failing_subscription(emu: StripeEmulator) -> dict[str, Any]:
    """An active subscription whose customer's card then starts declining."""
    customer = emu.create_customer()
    sub = emu.create_subscription(customer["id"], emu.create_price()["id"])
    emu.set_default_payment_method(customer["id"], "pm_card_chargeDeclined")
    return sub


def test_failed_renewal_goes_past_due_then_canceled() -> None:
    """Default policy: past_due with retries, then canceled with the invoice left open."""
    policy = RetryPolicy(retry_delays=(timedelta(days=1), timedelta(days=2)))
    with StripeEmulator(start_time=START, retry_policy=policy) as emu:
        sub = failing_subscription(emu)
        end = sub["items"]["data"][0]["current_period_end"]
        emu.advance_to(end)
        now = emu.get(sub["id"])
        invoice = emu.get(now["latest_invoice"])
        assert now["status"] == "past_due"
        assert (invoice["status"], invoice["attempt_count"]) == ("open", 1)
        assert invoice["next_payment_attempt"] == end + DAY
        emu.advance(timedelta(days=1))
        assert emu.get(invoice["id"])["attempt_count"] == 2
        emu.advance(timedelta(days=2))
        final = emu.get(sub["id"])
        invoice = emu.get(invoice["id"])
        assert final["status"] == "canceled" and final["ended_at"] == end + 3 * DAY
        assert final["cancellation_details"]["reason"] == "payment_failed"
        assert (invoice["status"], invoice["attempt_count"]) == ("open", 3)
        assert invoice["next_payment_attempt"] is None
        assert emu.events()[0]["type"] == "customer.subscription.deleted"


def test_failed_renewal_can_end_unpaid_with_uncollectible_invoice() -> None:
    """final_action='unpaid': subscription unpaid, invoice marked uncollectible."""
    policy = RetryPolicy(retry_delays=(timedelta(days=3),), final_action="unpaid")
    with StripeEmulator(start_time=START, retry_policy=policy) as emu:
        sub = failing_subscription(emu)
        emu.advance_to(sub["items"]["data"][0]["current_period_end"] + 3 * DAY)
        final = emu.get(sub["id"])
        assert final["status"] == "unpaid"
        assert emu.get(final["latest_invoice"])["status"] == "uncollectible"
        assert emu.events("invoice.marked_uncollectible")


def test_retry_succeeds_after_the_card_is_fixed(emu: StripeEmulator) -> None:
    """A past_due subscription returns to active when a scheduled retry is paid."""
    sub = failing_subscription(emu)
    emu.advance_to(sub["items"]["data"][0]["current_period_end"])
    assert emu.get(sub["id"])["status"] == "past_due"
    emu.set_default_payment_method(sub["customer"], "pm_card_visa")
    emu.advance(timedelta(days=3))
    recovered = emu.get(sub["id"])
    assert recovered["status"] == "active"
    assert emu.get(recovered["latest_invoice"])["status"] == "paid"


def test_cancel_at_period_end_cancels_at_the_boundary(emu: StripeEmulator) -> None:
    """cancel_at_period_end ends the subscription at period end instead of renewing."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    emu.update_subscription(sub["id"], cancel_at_period_end=True)
    end = sub["items"]["data"][0]["current_period_end"]
    emu.advance_to(end + DAY)
    final = emu.get(sub["id"])
    assert (final["status"], final["ended_at"], final["canceled_at"]) == ("canceled", end, START)
    assert len(emu.objects("invoices")) == 1


def test_incomplete_subscription_expires_after_23_hours(emu: StripeEmulator) -> None:
    """An unpaid first invoice expires the subscription and voids the invoice."""
    sub = emu.create_subscription(
        emu.create_customer(payment_method="pm_card_chargeDeclined")["id"], emu.create_price()["id"]
    )
    assert sub["status"] == "incomplete"
    emu.advance(timedelta(hours=23))
    expired = emu.get(sub["id"])
    assert expired["status"] == "incomplete_expired" and expired["ended_at"] == START + 23 * 3600
    assert emu.get(sub["latest_invoice"])["status"] == "void"


def test_trial_end_starts_billing(emu: StripeEmulator) -> None:
    """A trialing subscription is billed at trial end and becomes active."""
    sub = emu.create_subscription(
        emu.create_customer()["id"], emu.create_price()["id"], trial_days=14
    )
    assert sub["status"] == "trialing" and sub["trial_end"] == START + 14 * DAY
    assert emu.get(sub["latest_invoice"])["amount_due"] == 0
    emu.advance(timedelta(days=14))
    active = emu.get(sub["id"])
    assert active["status"] == "active"
    assert active["items"]["data"][0]["current_period_start"] == START + 14 * DAY
    assert emu.get(active["latest_invoice"])["amount_paid"] == 2000
