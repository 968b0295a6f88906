"""The drain against a real PostgreSQL and a fake SendGrid (the real client, real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from reconcile.notify import NotifyPolicy, drain, preview
from tests.fake_sendgrid import FakeSendGrid, fake_sendgrid
from tests.notify_support import (
    Clock,
    apply_invoice,
    clock,
    failed_invoice,
    make_due,
    rows,
    sendgrid_sender,
)

POLICY = NotifyPolicy(max_attempts=3, backoff_base=timedelta(seconds=30))


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    """A fake SendGrid on 127.0.0.1."""
    with fake_sendgrid() as fake:
        yield fake


def run(engine: Engine, fake: FakeSendGrid, now: Clock, **kw: object):  # type: ignore[no-untyped-def]
    return drain(engine, sendgrid_sender(fake.url), kw.pop("policy", POLICY), clock=now,
                 jitter=lambda: 0.0, **kw)  # type: ignore[arg-type]


def alerts_in(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if str(e["event"]).startswith("alert.")]


def test_sends_once_with_ids_category_and_message_id(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    """A due row is sent once, tagged with its ids, and SendGrid's message id is stored."""
    apply_invoice(engine, failed_invoice("in_1", next_attempt=1_900_000_000),
                  event_type="invoice.payment_failed")
    now = clock()
    with capture_logs() as logs:
        result = run(engine, sendgrid, now)
    assert (result.claimed, result.sent) == (1, 1)
    [req] = sendgrid.recorded
    row = rows(engine)[0]
    assert req.body["custom_args"] == {"notification_id": str(row["id"]),
                                       "stripe_invoice_id": "in_1"}
    assert req.body["categories"] == ["payment_failed"]
    assert req.body["personalizations"][0]["to"] == [{"email": "customer@example.com"}]
    assert req.body["subject"] == "Your payment of $15.00 failed"
    assert req.headers["authorization"].startswith("Bearer SG.")
    assert (row["status"], row["provider_message_id"], row["attempts"]) == ("sent", "msg-1", 1)
    assert [a["event"] for a in alerts_in(logs)] == ["alert.payment_failed"]
    alert = alerts_in(logs)[0]
    assert (alert["invoice_id"], alert["amount_due"], alert["currency"]) == ("in_1", 1500, "usd")
    assert run(engine, sendgrid, now).claimed == 0  # nothing left: never sent twice


def test_payment_failed_waits_for_its_hold(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """Right after the failure nothing is due yet (a 3-D Secure e-mail may replace it)."""
    apply_invoice(engine, failed_invoice("in_1"), event_type="invoice.payment_failed")
    now = clock()
    now.advance(timedelta(minutes=-3))
    assert run(engine, sendgrid, now).claimed == 0
    now.advance(timedelta(minutes=3))
    assert run(engine, sendgrid, now).sent == 1


def test_transient_failures_back_off_then_succeed(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """429 and 500 are retried after a growing delay; then the e-mail is sent once."""
    apply_invoice(engine, failed_invoice("in_1"))
    sendgrid.answer(429, 500)
    now = clock()
    with capture_logs() as logs:
        first = run(engine, sendgrid, now)
    assert (first.retrying, first.sent) == (1, 0)
    row = rows(engine)[0]
    assert row["status"] == "pending" and row["last_error"].startswith("HTTP 429")
    assert row["next_attempt_at"] == now.now + timedelta(seconds=15)  # jitter 0: half of 30 s
    retry = next(e for e in logs if e["event"] == "notify.retrying")
    assert retry["invoice_id"] == "in_1" and retry["notification_id"] == row["id"]
    assert run(engine, sendgrid, now).claimed == 0  # not due yet
    now.advance(timedelta(seconds=15))
    assert run(engine, sendgrid, now).retrying == 1  # the 500
    now.advance(timedelta(seconds=30))
    assert run(engine, sendgrid, now).sent == 1
    assert [r.status for r in sendgrid.recorded] == [429, 500, 202]
    assert rows(engine)[0]["attempts"] == 3


def test_transient_failures_give_up_after_max_attempts(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    """After NOTIFY_MAX_ATTEMPTS transient failures the row fails with an alert."""
    apply_invoice(engine, failed_invoice("in_1"))
    sendgrid.default_status = 503
    now = clock()
    with capture_logs() as logs:
        for _ in range(POLICY.max_attempts):
            run(engine, sendgrid, now)
            now.advance(timedelta(hours=1))
    row = rows(engine)[0]
    assert row["status"] == "failed" and "gave up after 3 attempts" in row["last_error"]
    failed = [a for a in alerts_in(logs) if a["event"] == "alert.email_failed"]
    assert len(failed) == 1 and failed[0]["status"] == 503


def test_permanent_failure_fails_at_once(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """A 400 is not retried: the row fails and operators get an alert with the reason."""
    apply_invoice(engine, failed_invoice("in_1"))
    sendgrid.answer(400)
    with capture_logs() as logs:
        result = run(engine, sendgrid, clock())
    assert result.failed == 1 and len(sendgrid.recorded) == 1
    row = rows(engine)[0]
    assert (row["status"], row["last_error"]) == ("failed", "HTTP 400: scripted 400")
    [alert] = [a for a in alerts_in(logs) if a["event"] == "alert.email_failed"]
    assert (alert["invoice_id"], alert["notification_id"]) == ("in_1", row["id"])


def test_refused_key_stops_and_keeps_everything_pending(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    """A 401 stops the drain; rows stay pending with their attempt given back."""
    apply_invoice(engine, failed_invoice("in_1"))
    apply_invoice(engine, failed_invoice("in_2"))
    sendgrid.answer(401)
    with capture_logs() as logs:
        result = run(engine, sendgrid, clock())
    assert result.stopped and "SENDGRID_API_KEY" in result.stopped
    assert {(r["status"], r["attempts"]) for r in rows(engine)} == {("pending", 0)}
    assert any(a["event"] == "alert.email_backend_refused" for a in alerts_in(logs))


def test_network_error_is_transient(engine: Engine) -> None:
    """Nothing listening on the port: the row is retried later, not failed."""
    apply_invoice(engine, failed_invoice("in_1"))
    with fake_sendgrid() as gone:
        url = gone.url
    result = drain(engine, sendgrid_sender(url), POLICY, clock=clock())
    assert result.retrying == 1
    assert rows(engine)[0]["last_error"].startswith("network error")


def test_no_recipient_fails_with_an_alert(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """No user e-mail and no customer_email: failed with that reason, and an alert."""
    apply_invoice(engine, failed_invoice("in_1", email=None))
    with capture_logs() as logs:
        result = run(engine, sendgrid, clock())
    assert result.failed == 1 and sendgrid.recorded == []
    assert rows(engine)[0]["last_error"].startswith("no recipient")
    assert any(a["event"] == "alert.email_failed" for a in alerts_in(logs))


def test_stale_pending_rows_are_suppressed_at_send_time(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    """An outbox not drained for longer than the max age does not send old news."""
    apply_invoice(engine, failed_invoice("in_1"))
    now = clock()
    now.advance(timedelta(hours=73))
    result = run(engine, sendgrid, now)
    assert (result.suppressed, result.sent) == (1, 0)
    assert rows(engine)[0]["status"] == "suppressed"


def test_alert_only_rows_are_alerted_once(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """An uncollectible invoice raises its alert once; no e-mail beyond the customer's."""
    apply_invoice(engine, failed_invoice("in_1", status="uncollectible"))
    now = clock()
    with capture_logs() as logs:
        run(engine, sendgrid, now)
        run(engine, sendgrid, now)
    events = sorted(str(a["event"]) for a in alerts_in(logs))
    assert events == ["alert.invoice_uncollectible", "alert.payment_failed"]
    assert len(sendgrid.recorded) == 1
    assert "still unpaid" in sendgrid.recorded[0].body["subject"]


def test_dynamic_template_and_sandbox(engine: Engine, sendgrid: FakeSendGrid) -> None:
    """With a template id, SendGrid gets template data instead of our content."""
    apply_invoice(engine, failed_invoice("in_1"))
    sender = sendgrid_sender(sendgrid.url, template_ids=(("payment_failed", "d-123"),),
                             sandbox=True)
    drain(engine, sender, POLICY, clock=clock())
    body = sendgrid.recorded[0].body
    assert body["template_id"] == "d-123" and "content" not in body
    data = body["personalizations"][0]["dynamic_template_data"]
    assert data["amount"] == "$15.00" and data["invoice_url"].startswith("https://")
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_product_name_is_looked_up_when_only_the_id_is_known(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    """A product known only by id is named through the lookup the CLI wires to Stripe."""
    apply_invoice(engine, failed_invoice("in_1"))
    run(engine, sendgrid, clock(), product_names={"prod_pro": "Pro plan"}.get)
    assert sendgrid.recorded[0].body["subject"] == "Your payment of $15.00 for Pro plan failed"


def test_dry_run_preview_lists_and_writes_nothing(engine: Engine) -> None:
    """preview() shows what is due, with subjects, and leaves every row as it was."""
    apply_invoice(engine, failed_invoice("in_1"))
    make_due(engine)
    before = rows(engine)
    [due] = preview(engine, clock=clock())
    assert (due.kind, due.stripe_invoice_id, due.recipient) == (
        "payment_failed", "in_1", "customer@example.com")
    assert due.subject == "Your payment of $15.00 failed"
    assert rows(engine) == before
