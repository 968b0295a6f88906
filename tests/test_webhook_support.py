"""Helpers shared by the webhook, serve and replay tests (this module holds no tests).

Events are signed for real (Stripe's own library computes the header), bodies are the
fixture events from tests/fixtures/events with their ids renamed per test, and a tiny
Stripe stand-in on 127.0.0.1 answers the gateway's retrieves and event listings.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import stripe
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from config import Settings, load_settings
from reconcile.database import make_engine
from reconcile.ledger import ObjectSource
from reconcile.webhook import REQUIRED_SETTINGS, WEBHOOK_PATH, create_app

FIXTURES = Path(__file__).parent / "fixtures" / "events"
SECRET = "whsec_test_0123456789abcdefghijklmnop"
OLD_SECRET = "whsec_test_old_9876543210zyxwvutsrqpo"
API_KEY = "sk_test_webhooktests0000000000"
# The subscription's life in the fixtures, in the order Stripe produced it.
LIFECYCLE = (
    "evt_Seed000001__customer.subscription.created.json",
    "evt_Seed000002__invoice.payment_failed.json",
    "evt_Seed000003__customer.subscription.updated.json",
    "evt_Seed000004__invoice.paid.json",
    "evt_Seed000005__customer.subscription.updated.json",
    "evt_Seed000006__customer.subscription.deleted.json",
)


def load_lifecycle(tag: str) -> list[dict[str, Any]]:
    """The six fixture events with every Seed id renamed after `tag` (sub_<tag>n1, ...)."""
    out = []
    for name in LIFECYCLE:
        raw = (FIXTURES / name).read_text().replace("Seed00000", f"{tag}n")
        out.append(json.loads(raw))
    return out


def customer_of(tag: str) -> str:
    """The customer id `load_lifecycle(tag)` uses."""
    return f"cus_{tag}n1"


def event(
    event_type: str, obj: Mapping[str, Any], *, created: int, event_id: str | None = None,
    livemode: bool = False, account: str | None = None,
) -> dict[str, Any]:
    """A snapshot event around `obj` (for example a builder from tests.payloads)."""
    body: dict[str, Any] = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "data": {"object": copy.deepcopy(dict(obj))},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    if account is not None:
        body["account"] = account
    return body


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A real Stripe-Signature header for `body`, by Stripe's own library."""
    return str(stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp if timestamp is not None else int(time.time())
    ))


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body bytes of an event."""
    return json.dumps(payload).encode()


def settings(db_url: str, **env: str) -> Settings:
    """Receiver settings as the environment would give them."""
    environ = {
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        **env,
    }
    return load_settings(environ, env_file=None, require=REQUIRED_SETTINGS)


@contextmanager
def receiver(
    db_url: str, gateway: ObjectSource | None = None, **env: str
) -> Iterator[tuple[TestClient, Engine]]:
    """The app behind an ASGI test client, on its own engine (staging tables installed).

    Without a gateway the app cannot re-fetch, so WEBHOOK_REFETCH defaults to never.
    """
    if gateway is None:
        env = {"WEBHOOK_REFETCH": "never", **env}
    engine = make_engine(db_url)
    try:
        app = create_app(settings(db_url, **env), engine, gateway)
        with TestClient(app) as client:
            yield client, engine
    finally:
        engine.dispose()


def post(client: Any, payload: Mapping[str, Any] | bytes, *, secret: str = SECRET) -> Any:
    """POST a signed event to the receiver; returns the response."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    return client.post(
        WEBHOOK_PATH, content=body,
        headers={"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"},
    )


def ledger(engine: Engine) -> dict[str, str]:
    """event_id -> outcome of every recorded event."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, outcome FROM stripe_events"))
        return {str(i): str(o) for i, o in rows}


def metric(client: Any, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    )
    for line in client.get("/metrics").text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


@dataclass
class StripeStub:
    """What the stand-in Stripe serves: objects by id, listed events, an optional delay."""

    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[str] = field(default_factory=list)


def _handler(stub: StripeStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)  # adds the Date header the gateway reads
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            stub.requests.append(self.path)
            time.sleep(stub.delay_s)
            path = self.path.split("?")[0]
            parts = path.strip("/").split("/")
            if path == "/v1/events":
                newest_first = sorted(stub.events, key=lambda e: -e["created"])
                self._send(200, {"object": "list", "data": newest_first, "has_more": False,
                                 "url": "/v1/events"})
                return
            store = {"subscriptions": stub.subscriptions, "invoices": stub.invoices}
            if len(parts) == 3 and parts[1] in store and parts[2] in store[parts[1]]:
                self._send(200, store[parts[1]][parts[2]])
                return
            self._send(404, {"error": {"type": "invalid_request_error",
                                       "code": "resource_missing", "message": "No such object"}})

    return Handler


@contextmanager
def stripe_stub(stub: StripeStub) -> Iterator[str]:
    """Serve `stub` on 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def at(epoch: int) -> datetime:
    """An epoch second as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)
