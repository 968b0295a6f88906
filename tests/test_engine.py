"""The reconciliation run against a real PostgreSQL, with Stripe faked in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from reconcile.engine import RunOptions, RunResult, run_reconciliation
from reconcile.errors import (
    AccountMismatchError,
    LockHeldError,
    SafetyValveError,
    StripeUnavailableError,
)
from reconcile.guards import LOCK_KEY
from tests import payloads as p
from tests.dbutil import (
    add_user,
    dump,
    invoice_row,
    set_invoice,
    set_subscription,
    subscription_row,
    user_status,
)
from tests.fakes import FakeStripe


def run(engine: Engine, fake: FakeStripe, *, dry_run: bool = False, **kw: object) -> RunResult:
    options = RunOptions(dry_run=dry_run, max_changes=int(kw.pop("max_changes", 1000)), **kw)  # type: ignore[arg-type]
    return run_reconciliation(engine, fake, options)


def kinds(result: RunResult) -> set[tuple[str, str | None]]:
    return {(d.kind, d.field) for d in result.drift}


@pytest.fixture
def synced(engine: Engine) -> FakeStripe:
    """A database already in step with a small Stripe account."""
    add_user(engine, "cus_a", status="active")
    add_user(engine, "cus_b")
    fake = FakeStripe()
    fake.add_subscription(p.subscription("sub_a", "cus_a"))
    fake.add_subscription(p.subscription("sub_b", "cus_b", status="past_due", legacy=True))
    fake.add_invoice(p.invoice("in_b", "cus_b", "sub_b", status="open", amount_remaining=1500))
    fake.add_invoice(p.invoice("in_a", "cus_a", "sub_a", legacy=True))
    run(engine, fake)
    fake.tick()
    return fake


def test_first_run_inserts_everything_and_second_dry_run_is_clean(engine: Engine) -> None:
    """A fresh database gets every object inserted; a second dry run finds no drift."""
    add_user(engine, "cus_a")
    fake = FakeStripe()
    fake.add_subscription(p.subscription("sub_a", "cus_a", legacy=True))
    fake.add_invoice(p.invoice("in_a", "cus_a", "sub_a"))
    first = run(engine, fake)
    assert first.counts == {"missing_local": 1, "invoice_missing_local": 1, "user_status": 1}
    assert first.outcome == "corrected"
    row = subscription_row(engine, "sub_a")
    assert row["current_period_end"] == datetime.fromtimestamp(p.T0 + 30 * 86400, UTC)
    assert row["stripe_price_id"] == "price_basic"
    assert invoice_row(engine, "in_a")["stripe_subscription_id"] == "sub_a"
    fake.tick()
    again = run(engine, fake, dry_run=True)
    assert again.counts == {} and again.outcome == "in_sync"


def test_each_subscription_field_drift_is_reported_then_corrected(
    engine: Engine, synced: FakeStripe
) -> None:
    """Planted drift in every mirrored field shows up field by field and is fixed."""
    set_subscription(
        engine, "sub_a", status="canceled", cancel_at_period_end=True,
        current_period_end=datetime(2020, 1, 1, tzinfo=UTC),
        end_date=datetime(2020, 1, 1, tzinfo=UTC),
        stripe_price_id="price_old",
    )
    set_invoice(engine, "in_b", status="uncollectible", amount_remaining=0, attempt_count=0)
    # `canceled` is terminal locally, so Stripe's `active` would look like a regression:
    # plant a non-terminal wrong status for the status check instead.
    set_subscription(engine, "sub_a", status="unpaid")
    before = dump(engine)
    report = run(engine, synced, dry_run=True)
    assert dump(engine) == before, "a dry run must not change mirrored data"
    assert {
        ("status", "status"),
        ("cancel_at_period_end", "cancel_at_period_end"),
        ("current_period_end", "current_period_end"),
        ("end_date", "end_date"),
        ("price", "stripe_price_id"),
        ("invoice_status", "status"),
        ("invoice_amounts", "amount_remaining"),
        ("invoice_attempts", "attempt_count"),
    } <= kinds(report)
    status = next(d for d in report.drift if d.kind == "status")
    assert (status.local, status.stripe, status.action) == ("unpaid", "active", "update")
    fixed = run(engine, synced)
    assert fixed.changed_rows == report.changed_rows
    row = subscription_row(engine, "sub_a")
    assert (row["status"], row["cancel_at_period_end"], row["stripe_price_id"]) == (
        "active", False, "price_basic"
    )
    assert invoice_row(engine, "in_b")["status"] == "open"
    synced.tick()
    assert run(engine, synced, dry_run=True).counts == {}


def test_user_status_follows_best_subscription(engine: Engine, synced: FakeStripe) -> None:
    """An active subscription outranks an old canceled one in users.subscription_status."""
    synced.add_subscription(
        p.subscription("sub_a_old", "cus_a", status="canceled", ended_at=p.T0, created=p.T0 - 9e5)
    )
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET subscription_status = 'canceled'"))
    result = run(engine, synced)
    assert ("user_status", "subscription_status") in kinds(result)
    assert user_status(engine, "cus_a") == "active"
    assert user_status(engine, "cus_b") == "past_due"


def test_unknown_customer_reported_then_linked(engine: Engine, synced: FakeStripe) -> None:
    """A subscription of a customer with no user is stored unlinked, then linked later."""
    synced.add_subscription(p.subscription("sub_x", "cus_x"))
    first = run(engine, synced)
    unknown = [d for d in first.drift if d.kind == "unknown_customer"]
    assert [(d.stripe_id, d.action) for d in unknown] == [("sub_x", "report")]
    assert subscription_row(engine, "sub_x")["user_id"] is None
    user_id = add_user(engine, "cus_x")
    synced.tick()
    second = run(engine, synced)
    linked = [d for d in second.drift if d.kind == "unknown_customer"]
    assert [(d.stripe_id, d.action) for d in linked] == [("sub_x", "link")]
    assert subscription_row(engine, "sub_x")["user_id"] == user_id
    assert user_status(engine, "cus_x") == "active"


def test_missing_in_stripe_confirmed_by_404_marks_canceled(
    engine: Engine, synced: FakeStripe
) -> None:
    """A local subscription absent from a complete listing and 404 on retrieve is ended."""
    del synced.subscriptions["sub_b"]
    result = run(engine, synced)
    gone = [d for d in result.drift if d.kind == "missing_in_stripe"]
    assert [(d.stripe_id, d.action) for d in gone] == [("sub_b", "cancel")]
    assert "sub_b" in synced.retrieved
    row = subscription_row(engine, "sub_b")
    assert row["status"] == "canceled" and row["end_date"] is not None
    assert user_status(engine, "cus_b") == "canceled"


def test_absent_from_listing_but_retrievable_is_updated_not_ended(
    engine: Engine, synced: FakeStripe
) -> None:
    """An object the listing missed but Stripe still has is applied from the retrieve."""
    sub = synced.subscriptions.pop("sub_b")
    sub["status"] = "active"
    real_retrieve = synced.retrieve_subscription

    def retrieve(sub_id: str):  # type: ignore[no-untyped-def]
        synced.subscriptions[sub_id] = sub
        try:
            return real_retrieve(sub_id)
        finally:
            del synced.subscriptions[sub_id]

    synced.retrieve_subscription = retrieve  # type: ignore[method-assign]
    run(engine, synced)
    assert subscription_row(engine, "sub_b")["status"] == "active"


def test_local_open_invoice_not_listed_is_confirmed_by_retrieve(
    engine: Engine, synced: FakeStripe
) -> None:
    """An open local invoice outside the listing is retrieved and its new status applied."""
    paid = synced.invoices.pop("in_b")
    result_before = run(engine, synced, dry_run=True)
    assert ("missing_in_stripe", "status") in kinds(result_before)  # 404 while popped
    synced.invoices["in_b"] = {**paid, "status": "paid", "amount_remaining": 0}
    hidden = synced.invoices.pop("in_b")
    synced.retrieve_invoice = lambda i: synced._retrieve({"in_b": hidden}, i)  # type: ignore[method-assign]
    run(engine, synced)
    assert invoice_row(engine, "in_b")["status"] == "paid"


def test_failed_listing_applies_nothing_and_questions_nothing(
    engine: Engine, synced: FakeStripe
) -> None:
    """A listing that breaks halfway aborts the run: no writes, no 'missing' conclusions."""
    for n in range(5):
        synced.add_subscription(p.subscription(f"sub_new{n}", "cus_a", created=p.T0 + n))
    set_subscription(engine, "sub_a", status="unpaid")
    before = dump(engine)
    synced.fail_after_pages = 1
    with pytest.raises(StripeUnavailableError):
        run(engine, synced)
    assert dump(engine) == before
    assert synced.retrieved == []
    with engine.connect() as conn:
        outcome, error = conn.execute(
            text("SELECT outcome, error FROM reconcile_runs ORDER BY id DESC LIMIT 1")
        ).one()
    assert outcome == "failed" and "listing failed" in error


def test_second_concurrent_run_is_refused(engine: Engine, synced: FakeStripe) -> None:
    """While another transaction holds the run lock, a run fails at once with LockHeldError."""
    with engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        with pytest.raises(LockHeldError) as caught:
            run(engine, synced)
    assert caught.value.exit_code == 4
    run(engine, synced)  # the lock is free again once the holder commits


def test_safety_valve_blocks_then_force_applies(engine: Engine, synced: FakeStripe) -> None:
    """More changes than max_changes abort with nothing written, unless forced."""
    for n in range(4):
        synced.add_subscription(p.subscription(f"sub_n{n}", "cus_a", created=p.T0 + n))
    before = dump(engine)
    with pytest.raises(SafetyValveError) as caught:
        run(engine, synced, max_changes=3)
    assert caught.value.exit_code == 5
    assert dump(engine) == before
    result = run(engine, synced, max_changes=3, force=True)
    assert result.counts["missing_local"] == 4


def test_account_and_mode_are_remembered_and_enforced(engine: Engine) -> None:
    """The first writing run pins the account; another account or mode is refused."""
    fake = FakeStripe(account_id="acct_one")
    run(engine, fake, dry_run=True)
    run(engine, FakeStripe(account_id="acct_two"), dry_run=True)  # dry runs don't pin
    run(engine, fake)
    with pytest.raises(AccountMismatchError, match="acct_one"):
        run(engine, FakeStripe(account_id="acct_two"))
    with pytest.raises(AccountMismatchError, match="live mode"):
        run(engine, FakeStripe(account_id="acct_one", livemode=True))


def test_older_observation_never_overwrites_newer_row(engine: Engine, synced: FakeStripe) -> None:
    """A row observed after the listing (e.g. by a webhook) keeps its newer state."""
    later = synced.now + timedelta(seconds=30)
    set_subscription(engine, "sub_b", status="active", stripe_observed_at=later)
    result = run(engine, synced)
    assert subscription_row(engine, "sub_b")["status"] == "active"
    assert "status" not in result.counts


def test_terminal_status_is_never_left(engine: Engine, synced: FakeStripe) -> None:
    """A canceled row is not moved back to active even by a newer-looking observation."""
    set_subscription(engine, "sub_a", status="canceled")
    run(engine, synced)
    assert subscription_row(engine, "sub_a")["status"] == "canceled"


def test_object_staged_twice_applies_its_newest_observation(engine: Engine) -> None:
    """Two observations of one subscription in one batch: the newer wins, whatever the order."""
    from reconcile import staging
    from reconcile.apply import reconcile_staged
    from reconcile.snapshot import subscription_from_payload

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    newer = subscription_from_payload(
        p.subscription("sub_twice", "cus_t", status="past_due"), t0 + timedelta(seconds=5)
    )
    older = subscription_from_payload(p.subscription("sub_twice", "cus_t"), t0)
    with engine.begin() as conn:
        staging.stage_subscriptions(conn, [newer, older])
        applied = reconcile_staged(conn)
    assert applied.subscriptions_inserted == 1
    assert subscription_row(engine, "sub_twice")["status"] == "past_due"


def test_copy_staging_round_trips_awkward_text(engine: Engine) -> None:
    """Tabs, newlines, backslashes and a literal \\N in text fields survive COPY unchanged."""
    from reconcile import staging
    from reconcile.apply import reconcile_staged
    from reconcile.snapshot import invoice_from_payload

    awkward = "a\tb\\N\nc\\d\re"
    payload = p.invoice("in_awk", "cus_awk", None, email=awkward)
    state = invoice_from_payload(payload, datetime(2026, 12, 1, tzinfo=UTC))
    with engine.begin() as conn:
        staging.stage_invoices(conn, [state])
        reconcile_staged(conn)
    row = invoice_row(engine, "in_awk")
    assert row["customer_email"] == awkward
    assert row["stripe_subscription_id"] is None
    assert row["created"] == datetime.fromtimestamp(p.T0, UTC)


def test_sql_user_status_matches_the_pure_precedence(engine: Engine) -> None:
    """The set-based derivation agrees with policy.derive_user_status, unknown statuses too."""
    from reconcile.policy import derive_user_status

    cases = {
        "cus_1": ["canceled", "active", "past_due"],
        "cus_2": ["some_future_status", "canceled"],
        "cus_3": ["some_future_status"],
        "cus_4": ["unpaid", "trialing"],
    }
    fake = FakeStripe()
    for customer, statuses in cases.items():
        add_user(engine, customer)
        for n, status in enumerate(statuses):
            fake.add_subscription(p.subscription(f"sub_{customer}_{n}", customer, status=status))
    run(engine, fake)
    for customer, statuses in cases.items():
        assert user_status(engine, customer) == derive_user_status(statuses), customer
