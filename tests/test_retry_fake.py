"""A Stripe fake for payment retries (pay endpoint with idempotent replay), and its own test.

`serve_payments` adds `POST /v1/invoices/:id/pay` to the `tests.stripe_http` fake: a charge
moves the FakeStripe invoice like Stripe does (attempt_count + 1; paid, or still open after a
402 card_error), and a repeated Idempotency-Key gets the stored answer back with
`Idempotent-Replayed: true` and no second charge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import Engine, text

from reconcile.stripe_api import StripeGateway, key_livemode, make_client
from tests import payloads as p
from tests.fakes import FakeStripe
from tests.stripe_http import API, serve

KEY = "sk_test_51RetryTestKey00000000000"
Reply = tuple[int, dict[str, str], str]


@dataclass
class Payments:
    """What the pay endpoint saw and did; `declines` queues card errors per invoice, and
    invoices in `unavailable` get a 500 that must not be retried."""

    fake: FakeStripe
    declines: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    charges: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    cache: dict[str, Reply] = field(default_factory=dict)

    def charge(self, invoice_id: str) -> tuple[int, dict[str, Any]]:
        """Run one charge on the fake invoice, as Stripe would."""
        invoice = self.fake.invoices.get(invoice_id)
        if invoice is None:
            return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
        if invoice["status"] != "open":
            return 400, {"error": {"type": "invalid_request_error",
                                   "code": "invoice_not_payable", "message": "not open"}}
        self.charges.append(invoice_id)
        invoice["attempt_count"] += 1
        queued = self.declines.get(invoice_id)
        if queued:
            code, decline = queued.pop(0)
            return 402, {"error": {"type": "card_error", "code": code, "decline_code": decline,
                                   "message": "Your card was declined."}}
        invoice.update(status="paid", amount_remaining=0)
        sub = self.fake.subscriptions.get(invoice["parent"]["subscription_details"]["subscription"])
        if sub is not None:
            sub["status"] = "active"
        return 200, dict(invoice)


def serve_payments(rsps: responses.RequestsMock, payments: Payments) -> None:
    """Register the pay endpoint (with Stripe's idempotent replay) on `rsps`."""

    def pay(request: requests.PreparedRequest) -> Reply:
        payments.fake.stats.requests += 1
        key = str(request.headers["Idempotency-Key"])
        payments.keys.append(key)
        if key in payments.cache:
            status, headers, body = payments.cache[key]
            return status, {**headers, "Idempotent-Replayed": "true"}, body
        invoice_id = (request.path_url or "").split("/")[3]
        headers = {"Date": format_datetime(payments.fake.now, usegmt=True)}
        if invoice_id in payments.unavailable:  # Stripe failed and says retrying will not help
            error = {"error": {"type": "api_error", "message": "internal error"}}
            return 500, {**headers, "Stripe-Should-Retry": "false"}, json.dumps(error)
        status, body_json = payments.charge(invoice_id)
        reply = (status, headers, json.dumps(body_json))
        payments.cache[key] = reply
        return reply

    rsps.add_callback(responses.POST, re.compile(rf"{API}/v1/invoices/\w+/pay"), callback=pay)


def failed_invoice(fake: FakeStripe, inv_id: str, sub_id: str, **changes: Any) -> dict[str, Any]:
    """An open charge-automatically invoice whose first payment failed two days ago."""
    created = int((fake.now - timedelta(days=2)).timestamp())
    payload = p.invoice(inv_id, f"cus_{sub_id}", sub_id, status="open", amount_remaining=1500,
                        created=created)
    payload.update(collection_method="charge_automatically",
                   status_transitions={"finalized_at": created + 3600})
    payload.update(changes)
    return payload


def seed(
    engine: Engine, fake: FakeStripe, sub_id: str, *, local_status: str = "past_due",
    stripe_status: str = "past_due", sub: dict[str, Any] | None = None,
    invoice: dict[str, Any] | None = None, user: bool = True,
) -> str:
    """Put a failed invoice in Stripe and in the mirror as the last reconciliation left it."""
    inv_id = f"in_{sub_id.removeprefix('sub_')}"
    fake.add_subscription({**p.subscription(sub_id, f"cus_{sub_id}", status=stripe_status,
                          period_end=int((fake.now + timedelta(days=20)).timestamp())),
                           **(sub or {})})
    fake.add_invoice(failed_invoice(fake, inv_id, sub_id, **(invoice or {})))
    observed = fake.now - timedelta(hours=1)
    with engine.begin() as conn:
        if user:
            conn.execute(text("INSERT INTO users (email, stripe_customer_id) VALUES (:e, :c)"),
                         {"e": f"{sub_id}@example.com", "c": f"cus_{sub_id}"})
        conn.execute(text(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, status, "
            "stripe_observed_at) VALUES (:s, :c, :st, :o)"),
            {"s": sub_id, "c": f"cus_{sub_id}", "st": local_status, "o": observed})
        conn.execute(text(
            "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, stripe_customer_id,"
            " status, amount_due, amount_remaining, currency, attempt_count, created, "
            "stripe_observed_at) VALUES (:i, :s, :c, 'open', 1500, 1500, 'usd', 1, "
            "to_timestamp(:created), :o)"),
            {"i": inv_id, "s": sub_id, "c": f"cus_{sub_id}", "o": observed,
             "created": fake.invoices[inv_id]["created"]})
    return inv_id


def gateway() -> StripeGateway:
    """The real gateway against the fake, without backoff sleeps."""
    return StripeGateway(make_client(KEY, API, 0), api_key_livemode=key_livemode(KEY),
                         sleep=lambda s: None)


@pytest.fixture
def stripe_payments() -> Iterator[Payments]:
    """A FakeStripe served over HTTP mocks, with the pay endpoint."""
    payments = Payments(FakeStripe())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        serve(rsps, payments.fake)
        serve_payments(rsps, payments)
        yield payments


def test_fake_replays_a_repeated_key_without_charging(stripe_payments: Payments) -> None:
    """The fake charges once per key and replays the stored answer, as Stripe does."""
    fake = stripe_payments.fake
    fake.add_invoice(failed_invoice(fake, "in_x", "sub_x"))
    stripe_payments.declines["in_x"] = [("card_declined", "generic_decline")]
    outcomes = [gateway().pay_invoice("in_x", idempotency_key="k1") for _ in range(2)]
    assert [(o.status, o.replayed) for o in outcomes] == [("declined", False), ("declined", True)]
    assert stripe_payments.charges == ["in_x"] and fake.invoices["in_x"]["attempt_count"] == 2
