"""Ordering and concurrency: out-of-order, late, same-second and concurrent deliveries never
move a row back, never apply twice, and end where in-order delivery ends."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests import payloads as p
from tests.dbutil import add_user, observed, subscription_row, user_status
from tests.fakes import FakeStripe
from tests.test_webhook_support import (
    at,
    customer_of,
    event,
    ledger,
    load_lifecycle,
    metric,
    post,
    receiver,
)

LAST_EVENT = 1797728000  # the fixture subscription's deletion


def final_state(engine: Engine, tag: str) -> dict[str, Any]:
    """The mirrored state of one lifecycle, with its tag taken out of the ids."""
    with engine.connect() as conn:
        sub = conn.execute(text(
            "SELECT status, current_period_end, end_date, cancel_at_period_end, stripe_price_id,"
            " stripe_created, user_id IS NOT NULL AS linked FROM subscriptions"
            " WHERE stripe_subscription_id = :i"), {"i": f"sub_{tag}n1"}).mappings().one()
        inv = conn.execute(text(
            "SELECT status, amount_due, amount_remaining, attempt_count, next_payment_attempt,"
            " created, customer_email FROM invoices WHERE stripe_invoice_id = :i"),
            {"i": f"in_{tag}n1"}).mappings().one()
    return {"sub": dict(sub), "inv": dict(inv), "user": user_status(engine, customer_of(tag))}


def stripe_with_final_objects(tags: list[str]) -> FakeStripe:
    """Stripe as it is after the lifecycle: the subscription canceled, the invoice paid."""
    fake = FakeStripe(now=at(LAST_EVENT) + timedelta(days=1))
    for tag in tags:
        events = load_lifecycle(tag)
        fake.add_subscription(events[5]["data"]["object"])
        fake.add_invoice(events[3]["data"]["object"])
    return fake


@pytest.mark.parametrize("refetch", ["never", "conflicts"])
def test_every_permutation_ends_like_in_order_delivery(db_url: str, refetch: str) -> None:
    """All 720 orders of the six lifecycle events end in the in-order final state."""
    orders = list(itertools.permutations(range(6)))
    tags = [f"P{n}" for n in range(len(orders))]
    fake = stripe_with_final_objects(["Ref", *tags]) if refetch == "conflicts" else None
    with receiver(db_url, fake, WEBHOOK_REFETCH=refetch) as (client, engine):
        for tag in ["Ref", *tags]:
            add_user(engine, customer_of(tag))
        for response in (post(client, e) for e in load_lifecycle("Ref")):
            assert response.json()["outcome"] == "applied"
        expected = final_state(engine, "Ref")
        assert expected["sub"]["status"] == "canceled" and expected["inv"]["status"] == "paid"

        def deliver(tag: str, order: tuple[int, ...]) -> list[int]:
            events = load_lifecycle(tag)
            return [post(client, events[index]).status_code for index in order]

        # Permutations are independent (own ids), so they run side by side, which also has
        # the receiver group events of all kinds into shared transactions.
        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(deliver, tags, orders))
        assert codes == [[200] * 6] * len(orders)
        mismatched = [
            (tag, order) for tag, order in zip(tags, orders, strict=True)
            if final_state(engine, tag) != expected
        ]
        assert mismatched == []
        if fake is not None:
            assert fake.retrieved, "late events with other data must have been re-fetched"


def test_older_event_after_newer_changes_nothing(db_url: str) -> None:
    """A late, older event neither changes the row nor its staleness timestamp."""
    with receiver(db_url) as (client, engine):
        newer = event("customer.subscription.updated", p.subscription("sub_1", "cus_1"),
                      created=p.T0 + 10)
        older = event("customer.subscription.updated",
                      p.subscription("sub_1", "cus_1", status="past_due"), created=p.T0 + 5)
        assert post(client, newer).json()["outcome"] == "applied"
        assert post(client, older).json()["outcome"] == "no_change"
        assert subscription_row(engine, "sub_1")["status"] == "active"
        assert observed(engine, "subscriptions", "stripe_subscription_id", "sub_1") == at(
            p.T0 + 10)


def test_late_conflicting_event_is_settled_by_stripe(db_url: str) -> None:
    """With refetch=conflicts an older event that disagrees makes us ask Stripe, once."""
    fake = FakeStripe(now=at(p.T0 + 60))
    fake.add_subscription(p.subscription("sub_1", "cus_1", cancel_at_period_end=True))
    with receiver(db_url, fake) as (client, engine):
        post(client, event("customer.subscription.updated", p.subscription("sub_1", "cus_1"),
                           created=p.T0 + 10))
        assert fake.retrieved == []  # newer than nothing: no question to ask
        late = post(client, event("customer.subscription.updated",
                                  p.subscription("sub_1", "cus_1", status="past_due"),
                                  created=p.T0 + 5))
        assert late.json()["outcome"] == "applied"
        assert fake.retrieved == ["sub_1"]
        row = subscription_row(engine, "sub_1")
        assert (row["status"], row["cancel_at_period_end"]) == ("active", True)
        assert row["stripe_observed_at"] == at(p.T0 + 60)
        assert metric(client, "stripe_webhook_refetches_total") == 1


def test_same_second_events_are_settled_by_stripe(db_url: str) -> None:
    """Two events in one second with different data: Stripe's current object decides."""
    fake = FakeStripe(now=at(p.T0))  # Stripe's clock still in that second
    fake.add_subscription(p.subscription("sub_1", "cus_1", status="active"))
    with receiver(db_url, fake) as (client, engine):
        post(client, event("customer.subscription.created",
                           p.subscription("sub_1", "cus_1", status="incomplete"), created=p.T0))
        post(client, event("customer.subscription.updated",
                           p.subscription("sub_1", "cus_1", status="active"), created=p.T0))
        # The same pair arriving the other way round ends the same.
        post(client, event("customer.subscription.updated",
                           p.subscription("sub_2", "cus_1", status="active"), created=p.T0))
        fake.add_subscription(p.subscription("sub_2", "cus_1", status="active"))
        post(client, event("customer.subscription.created",
                           p.subscription("sub_2", "cus_1", status="incomplete"), created=p.T0))
        assert subscription_row(engine, "sub_1")["status"] == "active"
        assert subscription_row(engine, "sub_2")["status"] == "active"
        assert fake.retrieved == ["sub_1", "sub_2"]


def test_refetch_never_keeps_the_first_of_a_same_second_tie(db_url: str) -> None:
    """With refetch=never the guard alone decides: a tie is not overwritten (no Stripe call)."""
    with receiver(db_url) as (client, engine):
        for status in ("incomplete", "active"):
            post(client, event("customer.subscription.updated",
                               p.subscription("sub_1", "cus_1", status=status), created=p.T0))
        assert subscription_row(engine, "sub_1")["status"] == "incomplete"


def test_refetch_always_applies_stripes_current_object(db_url: str) -> None:
    """With refetch=always every handled event applies what Stripe says now."""
    fake = FakeStripe(now=at(p.T0 + 30))
    fake.add_subscription(p.subscription("sub_1", "cus_1", status="active"))
    with receiver(db_url, fake, WEBHOOK_REFETCH="always") as (client, engine):
        response = post(client, event("customer.subscription.updated",
                                      p.subscription("sub_1", "cus_1", status="past_due"),
                                      created=p.T0))
        assert response.json()["outcome"] == "applied"
        assert subscription_row(engine, "sub_1")["status"] == "active"
        assert fake.retrieved == ["sub_1"]
        post(client, event("customer.created", {"id": "cus_1"}, created=p.T0))
        assert fake.retrieved == ["sub_1"]  # unhandled types are never re-fetched


def test_deleted_subscription_gone_from_stripe_is_final(db_url: str) -> None:
    """A 404 on re-fetching a deleted subscription applies the deletion, even on a tie."""
    fake = FakeStripe(now=at(p.T0 + 30))
    with receiver(db_url, fake, WEBHOOK_REFETCH="always") as (client, engine):
        post(client, event("customer.subscription.updated", p.subscription("sub_1", "cus_1"),
                           created=p.T0))
        assert subscription_row(engine, "sub_1")["status"] == "active"  # 404: payload applied
        deleted = p.subscription("sub_1", "cus_1", status="canceled", ended_at=p.T0)
        response = post(client, event("customer.subscription.deleted", deleted, created=p.T0))
        assert response.json()["outcome"] == "applied"
        assert subscription_row(engine, "sub_1")["status"] == "canceled"


def test_same_event_delivered_concurrently_has_one_effect(db_url: str) -> None:
    """Eight threads deliver one event at once: one 'applied', seven 'duplicate'."""
    with receiver(db_url) as (client, engine):
        add_user(engine, "cus_1")
        body = event("customer.subscription.created", p.subscription("sub_1", "cus_1"),
                     created=p.T0)
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda _: post(client, body), range(8)))
        outcomes = sorted(r.json()["outcome"] for r in responses)
        assert outcomes == ["applied"] + ["duplicate"] * 7
        assert ledger(engine) == {body["id"]: "applied"}
        assert metric(client, "stripe_webhook_events_total",
                      type="customer.subscription.created", outcome="duplicate") == 7


def test_concurrent_events_of_a_new_subscription_keep_the_newest(db_url: str) -> None:
    """created and updated of a new subscription racing each other: the newer always wins."""
    with receiver(db_url) as (client, engine):
        add_user(engine, "cus_1")
        bodies = []
        for n in range(20):
            sub = f"sub_race{n}"
            bodies.append(event("customer.subscription.created",
                                p.subscription(sub, "cus_1", status="incomplete"), created=p.T0))
            bodies.append(event("customer.subscription.updated",
                                p.subscription(sub, "cus_1", status="active"), created=p.T0 + 1))
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda b: post(client, b), bodies))
        with engine.connect() as conn:
            statuses = conn.execute(text("SELECT DISTINCT status FROM subscriptions")).scalars()
            assert list(statuses) == ["active"]
        assert user_status(engine, "cus_1") == "active"

