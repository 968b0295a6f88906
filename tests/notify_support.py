"""Helpers for outbox and notifier tests: failed invoices, the apply path, clocks, rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from config import Secret
from reconcile import staging
from reconcile.apply import Applied, reconcile_staged
from reconcile.mail.sendgrid_sender import SendGridConfig, SendGridSender
from reconcile.snapshot import invoice_from_payload, subscription_from_payload
from tests import payloads as p

SENDGRID_KEY = "SG." + "testkeyid000000000000a" + "." + "testsecret0000000000000000000000000000"


def now_s() -> int:
    """The current epoch second (invoices here fail 'now', unlike payloads.T0)."""
    return int(datetime.now(UTC).timestamp())


def failed_invoice(
    inv_id: str, customer: str = "cus_1", sub_id: str | None = "sub_1", *,
    created: int | None = None, amount: int = 1500, currency: str = "usd",
    status: str = "open", attempt_count: int = 1, next_attempt: int | None = None,
    email: str | None = "customer@example.com", product: Any = "prod_pro",
) -> dict[str, Any]:
    """An invoice whose payment attempt failed (open, money still due)."""
    payload = p.invoice(
        inv_id, customer, sub_id, status=status, amount_due=amount,
        amount_remaining=amount if status in ("open", "uncollectible") else 0,
        attempt_count=attempt_count, next_payment_attempt=next_attempt,
        created=now_s() - 3600 if created is None else created, email=email,
    )
    payload["currency"] = currency
    payload["lines"] = {"object": "list", "data": [{
        "id": f"il_{inv_id}", "object": "line_item", "amount": amount, "currency": currency,
        "pricing": {"type": "price_details",
                    "price_details": {"price": "price_pro", "product": product}},
    }]}
    return payload


def apply_invoice(
    engine: Engine, payload: dict[str, Any], *, observed_at: datetime | None = None,
    event_type: str | None = None, max_age: timedelta = timedelta(hours=72),
) -> Applied:
    """Stage one invoice and apply it, as the webhook receiver does for one event."""
    seen = observed_at or datetime.now(UTC)
    with engine.begin() as conn:
        staging.prepare(conn)
        staging.stage_invoices(conn, [invoice_from_payload(payload, seen)])
        return reconcile_staged(conn, event_type=event_type, notify_max_age=max_age)


def apply_subscription(
    engine: Engine, payload: dict[str, Any], *, observed_at: datetime | None = None
) -> Applied:
    """Stage one subscription and apply it."""
    with engine.begin() as conn:
        staging.prepare(conn)
        staging.stage_subscriptions(
            conn, [subscription_from_payload(payload, observed_at or datetime.now(UTC))]
        )
        return reconcile_staged(conn)


def rows(engine: Engine) -> list[dict[str, Any]]:
    """Every notification row, oldest first."""
    with engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM notifications ORDER BY id")).mappings()
        return [dict(r) for r in found]


def statuses(engine: Engine) -> dict[tuple[str, str], str]:
    """(kind, invoice) -> status."""
    return {(r["kind"], r["stripe_invoice_id"]): r["status"] for r in rows(engine)}


def make_due(engine: Engine) -> None:
    """Skip the payment_failed hold: every pending row is due now."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE notifications SET next_attempt_at = now() - interval '1 second'"
                          " WHERE status = 'pending'"))


@dataclass
class Clock:
    """A settable clock for the drain (mutable on purpose, one per test)."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def clock() -> Clock:
    """A clock just past the payment_failed hold."""
    return Clock(datetime.now(UTC) + timedelta(minutes=3))


def sendgrid_sender(url: str, **kw: Any) -> SendGridSender:
    """The real SendGrid client pointed at a fake server."""
    return SendGridSender(SendGridConfig(
        api_key=Secret(SENDGRID_KEY), sender="billing@example.com", api_base=url,
        timeout_s=kw.pop("timeout_s", 5.0), **kw,
    ))
