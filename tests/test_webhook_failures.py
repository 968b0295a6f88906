"""Failures: nothing is half-applied, the answer is 5xx so Stripe retries, a redelivery then
applies the event, one bad event in a shared transaction fails alone, and logs stay clean."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, make_url, text

from reconcile import ledger
from reconcile.apply import reconcile_staged
from reconcile.errors import StripeUnavailableError
from reconcile.logging import configure_logging
from tests import payloads as p
from tests.dbutil import MIRRORED, add_user, dump, subscription_row
from tests.fakes import FakeStripe
from tests.test_webhook_support import SECRET, at, event, metric, post, receiver
from tests.test_webhook_support import ledger as ledger_rows


def set_connections(admin: Engine, db_url: str, *, allowed: bool) -> None:
    """Take the test database away from every client (or give it back)."""
    name = make_url(db_url).database
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})


def test_database_down_is_503_and_redelivery_applies(
    db_url: str, engine: Engine, pg_admin_engine: Engine
) -> None:
    """While PostgreSQL refuses connections the answer is 503; the retry is applied."""
    body = event("customer.subscription.created", p.subscription("sub_1", "cus_1"), created=p.T0)
    with receiver(db_url) as (client, _):
        set_connections(pg_admin_engine, db_url, allowed=False)
        try:
            down = post(client, body)
            assert down.status_code == 503 and "Stripe will retry" in down.text
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            assert metric(client, "stripe_webhook_database_errors_total") == 1
        finally:
            set_connections(pg_admin_engine, db_url, allowed=True)
        again = post(client, body)
        assert again.status_code == 200 and again.json()["outcome"] == "applied"
    assert subscription_row(engine, "sub_1")["status"] == "active"
    assert ledger_rows(engine) == {body["id"]: "applied"}


class FlakyStripe(FakeStripe):
    """Stripe that is unavailable for the ids in `down`."""

    down: set[str]

    def retrieve_subscription(self, subscription_id: str) -> Any:
        if subscription_id in self.down:
            raise StripeUnavailableError("Stripe GET failed after 3 attempt(s)")
        return super().retrieve_subscription(subscription_id)


def test_failed_refetch_rolls_back_event_and_ledger(db_url: str, engine: Engine) -> None:
    """A re-fetch that fails leaves neither the ledger row nor any effect; then it applies."""
    fake = FlakyStripe(now=at(p.T0 + 60))
    fake.down = {"sub_1"}
    fake.add_subscription(p.subscription("sub_1", "cus_1", status="active"))
    with receiver(db_url, fake, WEBHOOK_REFETCH="always") as (client, _):
        body = event("customer.subscription.updated",
                     p.subscription("sub_1", "cus_1", status="past_due"), created=p.T0)
        before = dump(engine, (*MIRRORED, "stripe_events"))
        failed = post(client, body)
        assert failed.status_code == 503
        assert dump(engine, (*MIRRORED, "stripe_events")) == before
        fake.down = set()
        assert post(client, body).json()["outcome"] == "applied"
        assert subscription_row(engine, "sub_1")["status"] == "active"


def test_failing_refetch_fails_only_its_own_event(db_url: str, engine: Engine) -> None:
    """Events needing a re-fetch settle on their own: others in flight still apply."""
    fake = FlakyStripe(now=at(p.T0 + 60))
    fake.down = {"sub_0"}
    with receiver(db_url, fake) as (client, _):
        for n in range(6):  # rows newer than the late events below
            post(client, event("customer.subscription.updated",
                               p.subscription(f"sub_{n}", "cus_1"), created=p.T0 + 10))
        late = [event("customer.subscription.updated",
                      p.subscription(f"sub_{n}", "cus_1", status="past_due"), created=p.T0)
                for n in range(6)]
        fresh = [event("customer.subscription.created", p.subscription(f"sub_new{n}", "cus_2"),
                       created=p.T0) for n in range(10)]
        for n in range(1, 6):
            fake.add_subscription(p.subscription(f"sub_{n}", "cus_1"))
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(lambda b: post(client, b).status_code, late + fresh))
        assert codes == [503] + [200] * 15
        assert set(ledger_rows(engine)) >= {b["id"] for b in late[1:] + fresh}
        assert late[0]["id"] not in ledger_rows(engine)


class GatedStripe(FakeStripe):
    """Stripe whose answer about sub_slow waits until the test opens the gate."""

    gate: threading.Event

    def retrieve_subscription(self, subscription_id: str) -> Any:
        if subscription_id == "sub_slow":
            assert self.gate.wait(timeout=20), "the gate was never opened"
        return super().retrieve_subscription(subscription_id)


def test_slow_stripe_does_not_hold_up_other_events(db_url: str, engine: Engine) -> None:
    """While one re-fetch hangs, later events are still written and answered."""
    fake = GatedStripe(now=at(p.T0 + 60))
    fake.gate = threading.Event()
    fake.add_subscription(p.subscription("sub_slow", "cus_1"))
    with receiver(db_url, fake) as (client, _), ThreadPoolExecutor(max_workers=1) as pool:
        post(client, event("customer.subscription.updated",
                           p.subscription("sub_slow", "cus_1"), created=p.T0 + 10))
        slow = pool.submit(post, client, event(
            "customer.subscription.updated",
            p.subscription("sub_slow", "cus_1", status="past_due"), created=p.T0))
        others = [post(client, event("customer.subscription.created",
                                     p.subscription(f"sub_{n}", "cus_2"), created=p.T0))
                  for n in range(5)]
        assert [r.json()["outcome"] for r in others] == ["applied"] * 5
        assert not slow.done()
        fake.gate.set()
        assert slow.result(timeout=20).json()["outcome"] == "no_change"
    assert subscription_row(engine, "sub_slow")["status"] == "active"


def test_one_failing_event_in_a_group_fails_alone(
    db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a shared transaction fails, its events are retried one by one; only the bad fails."""
    def fragile(conn: Any, **kw: Any) -> Any:
        if kw.get("event_type") == "invoice.voided":
            raise RuntimeError("boom")
        return reconcile_staged(conn, **kw)

    monkeypatch.setattr(ledger, "reconcile_staged", fragile)
    bad = event("invoice.voided", p.invoice("in_1", "cus_1", None, status="void"), created=p.T0)
    good = [event("customer.subscription.created", p.subscription(f"sub_{n}", "cus_1"),
                  created=p.T0) for n in range(12)]
    with receiver(db_url) as (client, _), ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda b: post(client, b), [bad, *good]))
    assert responses[0].status_code == 500 and responses[0].text == (
        "internal error; Stripe will retry\n")
    assert [r.status_code for r in responses[1:]] == [200] * 12
    assert set(ledger_rows(engine)) == {b["id"] for b in good}


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Capture the product's JSON log lines; restore the logging set-up afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[1]:
        root.addHandler(handler)
    root.setLevel(saved[0])
    structlog.reset_defaults()


def test_one_summary_line_per_webhook_without_body_or_secret(
    db_url: str, log_stream: io.StringIO
) -> None:
    """Each webhook logs one event line; neither the secret nor body values appear."""
    with receiver(db_url) as (client, engine):
        add_user(engine, "cus_1")
        invoice = p.invoice("in_1", "cus_1", None, status="open", email="private@example.com")
        post(client, event("invoice.payment_failed", invoice, created=p.T0))
        post(client, event("invoice.payment_failed", invoice, created=p.T0),
             secret="whsec_wrong_secret_000000")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    webhook = [line for line in lines if line["event"].startswith("webhook.event_")]
    rejected = [line for line in lines if line["event"] == "webhook.rejected"]
    assert [w["event"] for w in webhook] == ["webhook.event_applied"]
    assert webhook[0]["type"] == "invoice.payment_failed" and webhook[0]["object_id"] == "in_1"
    assert "invoice.invoice_status" not in webhook[0]["fields"]  # new rows report as such
    assert [r["reason"] for r in rejected] == ["bad_signature"]
    text_ = log_stream.getvalue()
    assert SECRET not in text_ and "private@example.com" not in text_
    assert "invoice.stripe.com" not in text_
