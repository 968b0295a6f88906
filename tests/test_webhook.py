"""The receiver app through an ASGI client on a real PostgreSQL: rejections, the ledger,
duplicates, misrouted and ignored events, secret rotation, payload shapes, probes, metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, make_url, text
from starlette.testclient import TestClient

from reconcile.webhook import WEBHOOK_PATH
from tests import payloads as p
from tests.dbutil import MIRRORED, add_user, dump, invoice_row, subscription_row, user_status
from tests.test_webhook_support import (
    OLD_SECRET,
    SECRET,
    encode,
    event,
    ledger,
    load_lifecycle,
    metric,
    post,
    receiver,
    sign,
)


@pytest.fixture
def app(db_url: str) -> Iterator[tuple[TestClient, Engine]]:
    """The receiver without a gateway (so WEBHOOK_REFETCH=never)."""
    with receiver(db_url) as pair:
        yield pair


def sub_event(sub_id: str = "sub_1", *, created: int = p.T0, **kw: Any) -> dict[str, Any]:
    return event("customer.subscription.updated", p.subscription(sub_id, "cus_1", **kw),
                 created=created)


def raw_post(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(WEBHOOK_PATH, content=body, headers=headers)


def test_valid_event_is_applied_and_recorded(app: tuple[TestClient, Engine]) -> None:
    """A signed subscription event inserts the row, links the user, and is in the ledger."""
    client, engine = app
    add_user(engine, "cus_1")
    body = sub_event(status="past_due")
    response = post(client, body)
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "applied"}
    row = subscription_row(engine, "sub_1")
    assert row["status"] == "past_due" and row["user_id"] is not None
    assert user_status(engine, "cus_1") == "past_due"
    with engine.connect() as conn:
        rec = conn.execute(text("SELECT * FROM stripe_events")).mappings().one()
    assert rec["event_id"] == body["id"] and rec["outcome"] == "applied"
    assert (rec["type"], rec["object_id"], rec["livemode"]) == (
        "customer.subscription.updated", "sub_1", False)
    assert rec["api_version"] == "2026-10-28.endive" and rec["source"] == "webhook"
    assert rec["processed_at"] >= rec["received_at"]
    assert metric(client, "stripe_webhook_events_total",
                  type="customer.subscription.updated", outcome="applied") == 1


def test_duplicate_delivery_has_no_second_effect(app: tuple[TestClient, Engine]) -> None:
    """The same event delivered again answers 200 'duplicate' and changes nothing."""
    client, engine = app
    body = sub_event()
    assert post(client, body).json()["outcome"] == "applied"
    before = dump(engine, (*MIRRORED, "stripe_events"))
    again = post(client, body)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert dump(engine, (*MIRRORED, "stripe_events")) == before


def test_second_event_for_the_same_change_has_no_effect(app: tuple[TestClient, Engine]) -> None:
    """Stripe's rare twin event (new id, same object and data) writes no row."""
    client, engine = app
    assert post(client, sub_event(created=p.T0)).json()["outcome"] == "applied"
    before = dump(engine)
    twin = post(client, sub_event(created=p.T0 + 1))
    assert twin.json()["outcome"] == "no_change"
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("make", "status", "why"),
    [
        (lambda b: {}, 400, "missing_signature"),
        (lambda b: {"Stripe-Signature": "t=1,v1=abc"}, 400, "bad_signature"),
        (lambda b: {"Stripe-Signature": "nonsense"}, 400, "malformed_signature"),
        (lambda b: {"Stripe-Signature": sign(b, "whsec_someone_elses_secret")}, 400,
         "bad_signature"),
        (lambda b: {"Stripe-Signature": sign(b, SECRET, int(time.time()) - 301)}, 400,
         "stale_timestamp"),
    ],
)
def test_signature_rejections(
    app: tuple[TestClient, Engine], make: Any, status: int, why: str
) -> None:
    """Missing, malformed, foreign or stale signatures: 400, counted, nothing written."""
    client, engine = app
    body = encode(sub_event())
    before = dump(engine, (*MIRRORED, "stripe_events"))
    response = raw_post(client, body, make(body))
    assert response.status_code == status
    assert response.text.count("\n") == 1
    assert dump(engine, (*MIRRORED, "stripe_events")) == before
    assert metric(client, "stripe_webhook_rejections_total", reason=why) == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"this is not json", "invalid_json"),
        (b'{"object": "list", "data": []}', "not_an_event"),
        (b'{"id": "evt_1", "object": "v2.core.event", "type": "v1.billing.meter.error_report_'
         b'triggered", "related_object": {"id": "mtr_1"}}', "thin_event"),
        (encode(event("customer.subscription.updated", {"id": "sub_1", "object": "subscription"},
                      created=p.T0)), "malformed_object"),
    ],
)
def test_signed_bodies_that_are_not_usable_events_are_rejected(
    app: tuple[TestClient, Engine], body: bytes, why: str
) -> None:
    """Correctly signed but not a snapshot event we can read: 400 with the reason, no writes."""
    client, engine = app
    before = dump(engine, (*MIRRORED, "stripe_events"))
    response = raw_post(client, body, {"Stripe-Signature": sign(body)})
    assert response.status_code == 400
    assert dump(engine, (*MIRRORED, "stripe_events")) == before
    assert metric(client, "stripe_webhook_rejections_total", reason=why) == 1


def test_oversized_body_is_413_whether_declared_or_streamed(db_url: str) -> None:
    """A body over WEBHOOK_MAX_BODY_BYTES is refused by its Content-Length or while read."""
    with receiver(db_url, WEBHOOK_MAX_BODY_BYTES="2048") as (client, engine):
        padded = sub_event()
        padded["data"]["object"]["metadata"] = {"pad": "x" * 4000}
        body = encode(padded)
        assert raw_post(client, body, {"Stripe-Signature": sign(body)}).status_code == 413

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = client.post(WEBHOOK_PATH, content=chunks(),
                               headers={"Stripe-Signature": sign(body)})
        assert streamed.status_code == 413
        assert metric(client, "stripe_webhook_rejections_total", reason="too_large") == 2
        assert ledger(engine) == {}
        assert post(client, sub_event()).status_code == 200  # small bodies still pass


def test_only_the_four_routes_exist(app: tuple[TestClient, Engine]) -> None:
    """Other paths are 404 and other methods 405; the probes answer."""
    client, _ = app
    assert client.get(WEBHOOK_PATH).status_code == 405
    assert client.get("/").status_code == 404
    assert client.get("/docs").status_code == 404
    assert client.post("/healthz").status_code == 405
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_is_503_when_not_migrated_or_unreachable(
    db_url: str, engine: Engine
) -> None:
    """/readyz fails while the schema is behind head, and with the database unreachable."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with receiver(db_url) as (client, _):
        response = client.get("/readyz")
        assert response.status_code == 503 and "0001" in response.text
        assert client.get("/healthz").status_code == 200
    dead = make_url(db_url).set(host=None, port=None, query={"host": "/nonexistent-socket-dir"})
    with receiver(dead.render_as_string(hide_password=False)) as (client, _):
        assert client.get("/readyz").status_code == 503


def test_other_mode_or_account_is_misrouted(app: tuple[TestClient, Engine]) -> None:
    """A live event for a test key, or another Connect account's event: 200, not applied."""
    client, engine = app
    live = event("customer.subscription.created", p.subscription("sub_live", "cus_1"),
                 created=p.T0, livemode=True)
    connect = event("customer.subscription.created", p.subscription("sub_con", "cus_1"),
                    created=p.T0, account="acct_other")
    for body in (live, connect):
        response = post(client, body)
        assert response.status_code == 200 and response.json()["outcome"] == "misrouted"
    assert dump(engine)["subscriptions"] == []
    assert set(ledger(engine).values()) == {"misrouted"}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO reconcile_account (stripe_account_id, livemode) "
                          "VALUES ('acct_ours', false)"))
    ours = event("customer.subscription.created", p.subscription("sub_ours", "cus_1"),
                 created=p.T0, account="acct_ours")
    assert post(client, ours).json()["outcome"] == "applied"


def test_unhandled_types_are_recorded_as_ignored(app: tuple[TestClient, Engine]) -> None:
    """customer.created and the id-less invoice.upcoming: 200, ledger says ignored."""
    client, engine = app
    upcoming = {k: v for k, v in p.invoice("x", "cus_1", "sub_1").items() if k != "id"}
    bodies = [
        event("customer.created", {"id": "cus_1", "object": "customer"}, created=p.T0),
        event("invoice.upcoming", upcoming, created=p.T0),
    ]
    for body in bodies:
        assert post(client, body).json()["outcome"] == "ignored"
    assert set(ledger(engine).values()) == {"ignored"}
    assert dump(engine)["invoices"] == []


def test_secret_rotation_accepts_both_secrets(db_url: str) -> None:
    """With two secrets configured, events signed by either are applied; a third is not."""
    with receiver(db_url, STRIPE_WEBHOOK_SECRET=f"{SECRET},{OLD_SECRET}") as (client, engine):
        assert post(client, sub_event("sub_new"), secret=SECRET).status_code == 200
        assert post(client, sub_event("sub_old"), secret=OLD_SECRET).status_code == 200
        assert post(client, sub_event("sub_x"), secret="whsec_third_secret_xx").status_code == 400
        assert sorted(r[1] for r in dump(engine)["subscriptions"]) == ["sub_new", "sub_old"]


def test_both_payload_shapes_are_applied_alike(app: tuple[TestClient, Engine]) -> None:
    """Legacy (top-level period, invoice.subscription) and current shapes give equal rows."""
    client, engine = app
    for suffix, legacy in (("new", False), ("old", True)):
        post(client, event("customer.subscription.created",
                           p.subscription(f"sub_{suffix}", "cus_1", legacy=legacy), created=p.T0))
        post(client, event("invoice.payment_failed",
                           p.invoice(f"in_{suffix}", "cus_1", f"sub_{suffix}", status="open",
                                     amount_remaining=1500, legacy=legacy), created=p.T0))
    new, old = subscription_row(engine, "sub_new"), subscription_row(engine, "sub_old")
    for column in ("status", "current_period_end", "stripe_price_id", "cancel_at_period_end"):
        assert new[column] == old[column]
    assert new["current_period_end"] is not None and new["stripe_price_id"] == "price_basic"
    assert invoice_row(engine, "in_new")["stripe_subscription_id"] == "sub_new"
    assert invoice_row(engine, "in_old")["stripe_subscription_id"] == "sub_old"


def test_fixture_lifecycle_in_order(app: tuple[TestClient, Engine]) -> None:
    """The six real-shaped fixture events, in order, end canceled with the invoice paid."""
    client, engine = app
    add_user(engine, "cus_Lifen1")
    outcomes = [post(client, e).json()["outcome"] for e in load_lifecycle("Life")]
    assert outcomes == ["applied"] * 6
    assert subscription_row(engine, "sub_Lifen1")["status"] == "canceled"
    assert invoice_row(engine, "in_Lifen1")["status"] == "paid"
    assert user_status(engine, "cus_Lifen1") == "canceled"


def test_metrics_expose_latency_and_counters(app: tuple[TestClient, Engine]) -> None:
    """/metrics is Prometheus text with the event counter and the latency histogram."""
    client, _ = app
    post(client, sub_event())
    text_ = client.get("/metrics")
    assert text_.headers["content-type"].startswith("text/plain")
    assert metric(client, "stripe_webhook_processing_seconds_count") == 1
    assert "stripe_webhook_database_errors_total 0.0" in text_.text
