"""The Stripe emulator's webhook delivery: signatures, duplicates, reordering, retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
import stripe

from reconcile.emulator import StripeEmulator, sign_payload

START = 1_800_000_000


@dataclass
class Receiver:
    """A local webhook receiver that records what it got and answers `status`."""

    url: str
    status: int = 200
    received: list[tuple[dict[str, Any], str, bytes]] = field(default_factory=list)


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver = cast(Any, self.server).receiver
        body = self.rfile.read(int(self.headers["Content-Length"]))
        receiver.received.append((json.loads(body), self.headers["Stripe-Signature"], body))
        self.send_response(receiver.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 with an ephemeral port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    out = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    cast(Any, server).receiver = out
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield out
    server.shutdown()
    server.server_close()



def test_signature_verifies_with_stripe_python(emu: StripeEmulator, receiver: Receiver) -> None:
    """Every delivery verifies with stripe.WebhookSignature.verify_header and the secret."""
    endpoint = emu.add_webhook_endpoint(receiver.url)
    emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    results = emu.deliver_pending()
    assert results and all(r.ok and r.status == 200 for r in results)
    for event, header, body in receiver.received:
        assert stripe.WebhookSignature.verify_header(body.decode(), header, endpoint.secret)
        parsed = stripe.Webhook.construct_event(body, header, endpoint.secret)
        assert parsed.id == event["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            receiver.received[0][2].decode(), receiver.received[0][1], "whsec_other"
        )


def test_sign_payload_matches_stripes_scheme() -> None:
    """The header is t=<ts>,v1=<hex hmac-sha256 of '<ts>.<body>'>."""
    header = sign_payload(b'{"a":1}', "whsec_x", 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert stripe.WebhookSignature.verify_header('{"a":1}', header, "whsec_x", tolerance=None)


def test_delivery_order_and_enabled_events(emu: StripeEmulator, receiver: Receiver) -> None:
    """Without options events arrive oldest first, filtered by the endpoint's enabled_events."""
    emu.add_webhook_endpoint(receiver.url, enabled_events=["invoice.paid", "customer.created"])
    emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    emu.deliver_pending()
    assert [e["type"] for e, _, _ in receiver.received] == ["customer.created", "invoice.paid"]
    assert emu.deliver_pending() == []


def test_duplicates_send_each_event_again(emu: StripeEmulator, receiver: Receiver) -> None:
    """duplicates=2 delivers every event three times, flagging the copies."""
    emu.add_webhook_endpoint(receiver.url, enabled_events=["customer.created"])
    emu.create_customer()
    results = emu.deliver_pending(duplicates=2)
    assert [r.duplicate for r in results] == [False, True, True]
    assert len({e["id"] for e, _, _ in receiver.received}) == 1 and len(receiver.received) == 3


def test_shuffle_seed_reorders_deterministically(emu: StripeEmulator, receiver: Receiver) -> None:
    """shuffle_seed permutes deliveries the same way for the same seed."""
    emu.add_webhook_endpoint(receiver.url)
    for _ in range(8):
        emu.create_customer()
    in_order = [e["id"] for e in reversed(emu.events())]
    emu.deliver_pending(shuffle_seed=42)
    first = [e["id"] for e, _, _ in receiver.received]
    assert sorted(first) == sorted(in_order) and first != in_order
    with StripeEmulator(start_time=START) as other:
        other.add_webhook_endpoint(receiver.url)
        for _ in range(8):
            other.create_customer()
        receiver.received.clear()
        other.deliver_pending(shuffle_seed=42)
    assert [e["id"] for e, _, _ in receiver.received] == first


def test_failed_deliveries_stay_queued(emu: StripeEmulator, receiver: Receiver) -> None:
    """A 500 answer keeps the event pending; the next call retries and clears pending_webhooks."""
    emu.add_webhook_endpoint(receiver.url, enabled_events=["customer.created"])
    emu.create_customer()
    event_id = emu.events()[0]["id"]
    assert emu.get(event_id)["pending_webhooks"] == 1
    receiver.status = 500
    assert [r.status for r in emu.deliver_pending()] == [500]
    receiver.status = 204
    assert [r.ok for r in emu.deliver_pending()] == [True]
    assert emu.get(event_id)["pending_webhooks"] == 0


def test_unreachable_endpoint_reports_an_error() -> None:
    """A refused connection gives status None and an error message, not an exception."""
    with StripeEmulator(start_time=START) as emu:
        emu.add_webhook_endpoint("http://127.0.0.1:9/hook")
        emu.create_customer()
        (result,) = emu.deliver_pending(timeout=2)
        assert result.status is None and result.error and not result.ok


def test_delay_sleeps_before_each_delivery(receiver: Receiver) -> None:
    """delay=… calls the injected sleep once per POST."""
    naps: list[float] = []
    with StripeEmulator(start_time=START, sleep=naps.append) as emu:
        emu.add_webhook_endpoint(receiver.url)
        emu.create_customer()
        emu.create_customer()
        emu.deliver_pending(delay=0.25)
    assert naps == [0.25, 0.25]
