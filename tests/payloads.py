"""Builders of Stripe-shaped JSON payloads for tests, in the current and the older API shape."""

from __future__ import annotations

from typing import Any

T0 = 1_780_000_000  # 2026-05-28, a fixed Stripe epoch for tests


def subscription(
    sub_id: str,
    customer: str,
    *,
    status: str = "active",
    period_end: int = T0 + 30 * 86400,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    ended_at: int | None = None,
    price: str = "price_basic",
    created: int = T0 - 86400,
    legacy: bool = False,
) -> dict[str, Any]:
    """A subscription; `legacy=True` puts the period at the top level like old API versions."""
    item: dict[str, Any] = {
        "id": f"si_{sub_id}",
        "object": "subscription_item",
        "price": {"id": price, "object": "price", "currency": "usd", "unit_amount": 1500},
        "quantity": 1,
    }
    payload: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": cancel_at,
        "ended_at": ended_at,
        "created": created,
        "livemode": False,
        "items": {"object": "list", "data": [item], "has_more": False},
    }
    if legacy:
        payload["current_period_end"] = period_end
        item["plan"] = {"id": price, "object": "plan"}
        del item["price"]
    else:
        item["current_period_end"] = period_end
        item["current_period_start"] = period_end - 30 * 86400
    return payload


def invoice(
    inv_id: str,
    customer: str,
    subscription_id: str | None,
    *,
    status: str = "paid",
    amount_due: int = 1500,
    amount_remaining: int = 0,
    attempt_count: int = 1,
    next_payment_attempt: int | None = None,
    created: int = T0,
    email: str | None = "customer@example.com",
    legacy: bool = False,
) -> dict[str, Any]:
    """An invoice; `legacy=True` points at its subscription with the top-level field."""
    payload: dict[str, Any] = {
        "id": inv_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "amount_due": amount_due,
        "amount_remaining": amount_remaining,
        "currency": "usd",
        "attempt_count": attempt_count,
        "next_payment_attempt": next_payment_attempt,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{inv_id}",
        "customer_email": email,
        "created": created,
        "due_date": None,
        "livemode": False,
    }
    if legacy:
        payload["subscription"] = subscription_id
    else:
        payload["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription_id, "metadata": {}},
        }
    return payload
