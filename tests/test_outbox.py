"""The outbox on a real PostgreSQL: what the apply path queues, suppresses and cancels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from reconcile.engine import RunOptions, run_reconciliation
from reconcile.notify_policy import unpaid_kind
from tests import payloads as p
from tests.dbutil import add_user, invoice_row
from tests.fakes import FakeStripe
from tests.notify_support import (
    apply_invoice,
    apply_subscription,
    failed_invoice,
    now_s,
    rows,
    statuses,
)
from tests.test_webhook_support import event, post, receiver


def batch(engine: Engine, fake: FakeStripe, *, dry_run: bool = False) -> None:
    run_reconciliation(engine, fake, RunOptions(dry_run=dry_run, max_changes=10_000))


def test_webhook_and_batch_seeing_the_same_failure_queue_one_email(db_url: str) -> None:
    """A failure delivered by webhook and then listed by the batch is queued once."""
    payload = failed_invoice("in_1")
    with receiver(db_url) as (client, engine):
        add_user(engine, "cus_1")
        answer = post(client, event("invoice.payment_failed", payload, created=now_s()))
        assert answer.status_code == 200, answer.text
        fake = FakeStripe()
        fake.add_subscription(p.subscription("sub_1", "cus_1", status="past_due"))
        fake.add_invoice(payload)
        fake.tick(5)
        batch(engine, fake)
        batch(engine, fake)
        found = rows(engine)
    assert [(r["kind"], r["stripe_invoice_id"], r["status"]) for r in found] == [
        ("payment_failed", "in_1", "pending")
    ]
    assert found[0]["recipient"] == "cus_1@example.com"  # the user's address wins


def test_batch_first_then_webhook_queue_one_email(db_url: str) -> None:
    """The batch noticing first, then the (late) webhook, still gives one row."""
    payload = failed_invoice("in_1")
    with receiver(db_url) as (client, engine):
        fake = FakeStripe()
        fake.add_invoice(payload)
        batch(engine, fake)
        post(client, event("invoice.payment_failed", payload, created=now_s() + 10))
        assert statuses(engine) == {("payment_failed", "in_1"): "pending"}


def test_redelivered_and_repeated_failure_events_queue_one_email(db_url: str) -> None:
    """The same event redelivered, and the next retry's failure, add no second e-mail."""
    first = event("invoice.payment_failed", failed_invoice("in_1"), created=now_s())
    retry = event("invoice.payment_failed", failed_invoice("in_1", attempt_count=2),
                  created=now_s() + 60)
    with receiver(db_url) as (client, engine):
        for body in (first, first, retry, retry):
            assert post(client, body).status_code == 200
        assert len(rows(engine)) == 1
        assert invoice_row(engine, "in_1")["attempt_count"] == 2


def test_recipient_falls_back_to_the_invoice_customer_email(engine: Engine) -> None:
    """Without a user, Stripe's customer_email on the invoice is the recipient."""
    apply_invoice(engine, failed_invoice("in_1", email="payer@example.com"))
    assert rows(engine)[0]["recipient"] == "payer@example.com"


def test_paid_before_sending_cancels_the_pending_email(engine: Engine) -> None:
    """An invoice paid after the failure, before the e-mail went out, cancels it."""
    seen = datetime.now(UTC)
    apply_invoice(engine, failed_invoice("in_1"), observed_at=seen)
    applied = apply_invoice(engine, failed_invoice("in_1", status="paid"),
                            observed_at=seen + timedelta(seconds=5))
    assert applied.notifications_canceled == 1
    row = rows(engine)[0]
    assert (row["status"], row["last_error"]) == ("canceled", "invoice paid")


def test_voided_invoice_and_canceled_subscription_cancel_pending_emails(engine: Engine) -> None:
    """A void invoice, or an ended subscription, cancels the pending e-mail."""
    seen = datetime.now(UTC)
    apply_subscription(engine, p.subscription("sub_2", "cus_1", status="past_due"),
                       observed_at=seen)
    apply_invoice(engine, failed_invoice("in_1"), observed_at=seen)
    apply_invoice(engine, failed_invoice("in_2", sub_id="sub_2"), observed_at=seen)
    apply_invoice(engine, failed_invoice("in_1", status="void"),
                  observed_at=seen + timedelta(seconds=1))
    apply_subscription(engine, p.subscription("sub_2", "cus_1", status="canceled",
                                              ended_at=now_s()),
                       observed_at=seen + timedelta(seconds=1))
    got = {(r["kind"], r["stripe_invoice_id"]): (r["status"], r["last_error"])
           for r in rows(engine)}
    assert got[("payment_failed", "in_1")] == ("canceled", "invoice void")
    assert got[("payment_failed", "in_2")] == ("canceled", "subscription canceled")
    # ...and operators hear that a subscription ended for non-payment.
    assert got[("subscription_canceled", "in_2")] == ("pending", None)


def test_old_failures_on_first_run_are_suppressed_not_sent(engine: Engine) -> None:
    """The first batch against an account with old failures records them as suppressed."""
    fake = FakeStripe()
    ten_days_ago = now_s() - 10 * 86400
    fake.add_invoice(failed_invoice("in_old", created=ten_days_ago))
    fake.add_invoice(failed_invoice("in_old_unc", status="uncollectible", created=ten_days_ago))
    fake.add_invoice(failed_invoice("in_new"))
    batch(engine, fake)
    got = {(r["kind"], r["stripe_invoice_id"]): (r["status"], r["last_error"])
           for r in rows(engine)}
    stale = "failure older than NOTIFY_MAX_AGE_HOURS"
    assert got == {
        ("payment_failed", "in_old"): ("suppressed", stale),
        ("payment_failed", "in_old_unc"): ("suppressed", stale),
        ("invoice_uncollectible", "in_old_unc"): ("suppressed", stale),
        ("payment_failed", "in_new"): ("pending", None),
    }
    fake.tick()
    batch(engine, fake)  # a second run changes nothing
    assert len(rows(engine)) == 4


def test_failure_event_dates_the_failure_even_on_an_old_invoice(engine: Engine) -> None:
    """A payment_failed event today on a month-old invoice is news: it is not suppressed."""
    month_ago = now_s() - 30 * 86400
    apply_invoice(engine, failed_invoice("in_1", created=month_ago, attempt_count=3),
                  event_type="invoice.payment_failed")
    assert statuses(engine) == {("payment_failed", "in_1"): "pending"}


def test_a_dry_run_queues_nothing(engine: Engine) -> None:
    """A rolled-back run (dry run) leaves the outbox empty."""
    fake = FakeStripe()
    fake.add_invoice(failed_invoice("in_1"))
    batch(engine, fake, dry_run=True)
    assert rows(engine) == []


def test_action_required_gets_its_own_kind_and_replaces_a_pending_failure(
    engine: Engine,
) -> None:
    """3-D Secure: the confirm-payment e-mail replaces the pending replace-your-card one."""
    seen = datetime.now(UTC)
    apply_invoice(engine, failed_invoice("in_1"), observed_at=seen,
                  event_type="invoice.payment_failed")
    apply_invoice(engine, failed_invoice("in_1"), observed_at=seen,
                  event_type="invoice.payment_action_required")
    assert statuses(engine) == {
        ("payment_failed", "in_1"): "canceled",
        ("action_required", "in_1"): "pending",
    }
    apply_invoice(engine, failed_invoice("in_2"), observed_at=seen,
                  event_type="invoice.payment_action_required")
    apply_invoice(engine, failed_invoice("in_2", attempt_count=2),
                  observed_at=seen + timedelta(seconds=1), event_type="invoice.payment_failed")
    assert statuses(engine)[("action_required", "in_2")] == "pending"
    assert ("payment_failed", "in_2") not in statuses(engine)


def test_payment_failed_is_held_briefly_and_action_required_is_not(engine: Engine) -> None:
    """payment_failed waits a moment for a possible action_required; the latter is due now."""
    apply_invoice(engine, failed_invoice("in_1"), event_type="invoice.payment_failed")
    apply_invoice(engine, failed_invoice("in_2"), event_type="invoice.payment_action_required")
    with engine.connect() as conn:
        delays = dict(conn.execute(text(
            "SELECT kind, extract(epoch FROM next_attempt_at - created_at) FROM notifications"
        )).all())
    assert 100 <= float(delays["payment_failed"]) <= 140
    assert float(delays["action_required"]) < 1


def test_product_facts_are_kept_for_the_email(engine: Engine) -> None:
    """The product id (and name, when expanded) reach the invoice row."""
    apply_invoice(engine, failed_invoice("in_1", product={"id": "prod_x", "name": "Pro"}))
    apply_invoice(engine, failed_invoice("in_2"))
    one, two = invoice_row(engine, "in_1"), invoice_row(engine, "in_2")
    assert (one["stripe_product_id"], one["product_name"]) == ("prod_x", "Pro")
    assert (two["stripe_product_id"], two["product_name"]) == ("prod_pro", None)
    assert one["payment_failed_at"] is not None


CASES = [
    # status, amount_remaining, attempt_count, event
    ("open", 1500, 1, None),
    ("open", 1500, 0, None),
    ("open", 0, 1, None),
    ("open", 1500, 0, "invoice.payment_failed"),
    ("open", 1500, 1, "invoice.payment_action_required"),
    ("uncollectible", 1500, 0, None),
    ("uncollectible", 0, 3, None),
    ("draft", 1500, 0, None),
    ("paid", 0, 1, "invoice.payment_failed"),
    ("void", 1500, 1, None),
]


@pytest.mark.parametrize(("status", "remaining", "attempts", "event_type"), CASES)
def test_sql_queues_exactly_what_the_pure_rule_says(
    engine: Engine, status: str, remaining: int, attempts: int, event_type: str | None
) -> None:
    """The set-based enqueue agrees with notify_policy.unpaid_kind on every state."""
    payload = failed_invoice("in_1", status=status, attempt_count=attempts)
    payload["amount_remaining"] = remaining
    apply_invoice(engine, payload, event_type=event_type)
    emails = {kind for kind, _ in statuses(engine) if kind in ("payment_failed",
                                                               "action_required")}
    expected = unpaid_kind(status=status, amount_remaining=remaining, attempt_count=attempts,
                           event_type=event_type)
    assert emails == ({expected} if expected else set())
