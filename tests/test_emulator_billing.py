"""The Stripe emulator's billing engine: paying invoices, idempotency, events and renewals."""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import stripe

from reconcile.emulator import StripeEmulator

START = 1_800_000_000
DAY = 86_400




def open_invoice(emu: StripeEmulator, card: str) -> tuple[dict[str, Any], str]:
    """A subscription whose first invoice is open and unattempted, and that invoice's id."""
    customer = emu.create_customer(payment_method=card)
    sub = emu.create_subscription(
        customer["id"], emu.create_price()["id"], payment_behavior="default_incomplete"
    )
    return sub, str(sub["latest_invoice"])


def post(emu: StripeEmulator, path: str, params: dict[str, str], key: str) -> tuple[int, Any, Any]:
    """A form POST with an Idempotency-Key over plain http.client."""
    url = urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    headers = {
        "Authorization": f"Bearer {emu.api_key}",
        "Idempotency-Key": key,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    conn.request("POST", path, body=urlencode(params), headers=headers)
    response = conn.getresponse()
    out = response.status, json.loads(response.read()), response.headers
    conn.close()
    return out


def test_paying_with_a_good_card_marks_paid_and_activates(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """invoices.pay with pm_card_visa: invoice paid, incomplete subscription becomes active."""
    sub, invoice_id = open_invoice(emu, "pm_card_chargeDeclined")
    assert sub["status"] == "incomplete"
    paid = client.v1.invoices.pay(
        invoice_id, {"payment_method": "pm_card_visa", "off_session": True}
    )
    assert paid.status == "paid" and paid.amount_remaining == 0 and paid.attempt_count == 1
    assert emu.get(sub["id"])["status"] == "active"
    types = [e["type"] for e in emu.events()][:4]
    assert types == [
        "customer.subscription.updated",
        "invoice.payment_succeeded",
        "invoice.paid",
        "invoice.finalized",
    ]


def test_declined_card_is_a_402_card_error(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """Paying with pm_card_chargeDeclined raises CardError(card_declined, generic_decline)."""
    _, invoice_id = open_invoice(emu, "pm_card_chargeDeclined")
    with pytest.raises(stripe.CardError) as info:
        client.v1.invoices.pay(invoice_id, {"off_session": True})
    error = info.value
    assert error.http_status == 402 and error.code == "card_declined"
    assert error.error is not None and error.error.decline_code == "generic_decline"
    assert error.error.type == "card_error"
    invoice = emu.get(invoice_id)
    assert invoice["status"] == "open" and invoice["attempt_count"] == 1
    assert emu.events()[0]["type"] == "invoice.payment_failed"


def test_same_idempotency_key_replays_without_charging_again(emu: StripeEmulator) -> None:
    """A repeated key returns the stored response (even a decline) and does not re-attempt."""
    _, invoice_id = open_invoice(emu, "pm_card_chargeDeclined")
    path = f"/v1/invoices/{invoice_id}/pay"
    first = post(emu, path, {"off_session": "true"}, "key-1")
    second = post(emu, path, {"off_session": "true"}, "key-1")
    assert first[0] == second[0] == 402 and first[1] == second[1]
    assert second[2]["Idempotent-Replayed"] == "true"
    assert emu.get(invoice_id)["attempt_count"] == 1
    paid = post(emu, path, {"payment_method": "pm_card_visa"}, "key-2")
    again = post(emu, path, {"payment_method": "pm_card_visa"}, "key-2")
    assert paid[0] == again[0] == 200 and again[1] == paid[1]
    assert emu.get(invoice_id)["attempt_count"] == 2
    assert len(emu.events("invoice.paid")) == 1
    other = post(emu, path, {"payment_method": "pm_card_mastercard"}, "key-2")
    assert other[0] == 400 and other[1]["error"]["type"] == "idempotency_error"


def test_paying_a_paid_or_void_invoice_is_rejected(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """A paid invoice gives 400 invoice_already_paid; a void one cannot be paid either."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    with pytest.raises(stripe.InvalidRequestError) as paid:
        client.v1.invoices.pay(sub["latest_invoice"])
    assert paid.value.http_status == 400 and paid.value.code == "invoice_already_paid"
    _, invoice_id = open_invoice(emu, "pm_card_visa")
    client.v1.invoices.void_invoice(invoice_id)
    with pytest.raises(stripe.InvalidRequestError) as void:
        client.v1.invoices.pay(invoice_id)
    assert void.value.http_status == 400


def test_subscription_creation_emits_stripes_events(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """Creating a paid subscription emits created, invoice events and the activation update."""
    customer = client.v1.customers.create(
        {"email": "x@y.test", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    price = emu.create_price()
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price["id"]}]}
    )
    assert sub.status == "active"
    events = list(reversed(emu.events()))
    types = [e["type"] for e in events if e["type"].startswith(("invoice", "customer.sub"))]
    assert types == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    update = events[-1]
    assert update["data"]["previous_attributes"] == {"status": "incomplete"}
    assert update["request"]["id"].startswith("req_") and update["livemode"] is False
    assert update["api_version"] == "2026-10-28.endive" and update["pending_webhooks"] == 0


def test_updates_carry_previous_attributes(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """cancel_at_period_end and metadata edits produce one updated event with the old values."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    client.v1.subscriptions.update(
        sub["id"], {"cancel_at_period_end": True, "metadata": {"plan": "gold"}}
    )
    event = emu.events("customer.subscription.updated")[0]
    previous = event["data"]["previous_attributes"]
    assert previous["cancel_at_period_end"] is False and previous["metadata"] == {}
    assert previous["cancel_at"] is None
    assert event["data"]["object"]["cancel_at_period_end"] is True


def test_events_expire_after_30_days_of_emulator_time(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """Events older than 30 days vanish from list and retrieve."""
    emu.create_customer()
    old = client.v1.events.list().data[0].id
    emu.advance(timedelta(days=29))
    assert client.v1.events.retrieve(old).id == old
    emu.advance(timedelta(days=2))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(old)
    assert old not in {e.id for e in client.v1.events.list({"limit": 100}).data}


def test_event_type_filters(emu: StripeEmulator, client: stripe.StripeClient) -> None:
    """type= (with a trailing * wildcard) and types[] select events by type."""
    emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    paid = client.v1.events.list({"type": "invoice.paid"}).data
    assert [e.type for e in paid] == ["invoice.paid"]
    invoice_events = {e.type for e in client.v1.events.list({"type": "invoice.*"}).data}
    assert invoice_events == {
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    }
    chosen = client.v1.events.list({"types": ["customer.created", "price.created"]}).data
    assert sorted(e.type for e in chosen) == ["customer.created", "price.created"]


def test_delete_cancels_now(emu: StripeEmulator, client: stripe.StripeClient) -> None:
    """DELETE /v1/subscriptions/:id sets canceled, ended_at and canceled_at to now."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    emu.advance(timedelta(hours=5))
    canceled = client.v1.subscriptions.cancel(sub["id"])
    assert canceled.status == "canceled"
    assert canceled.ended_at == canceled.canceled_at == START + 5 * 3600
    assert emu.events()[0]["type"] == "customer.subscription.deleted"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub["id"])


def test_direct_status_changes_emit_events(emu: StripeEmulator) -> None:
    """set_subscription_status and set_invoice_status emit the matching events."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    emu.set_subscription_status(sub["id"], "past_due")
    event = emu.events()[0]
    assert event["type"] == "customer.subscription.updated"
    assert event["data"]["previous_attributes"] == {"status": "active"}
    emu.set_subscription_status(sub["id"], "canceled")
    assert emu.events()[0]["type"] == "customer.subscription.deleted"
    _, invoice_id = open_invoice(emu, "pm_card_visa")
    emu.set_invoice_status(invoice_id, "uncollectible")
    assert emu.events()[0]["type"] == "invoice.marked_uncollectible"
    emu.set_invoice_status(invoice_id, "paid")
    newest = [e["type"] for e in emu.events()[:2]]
    assert newest == ["customer.subscription.updated", "invoice.payment_succeeded"]
