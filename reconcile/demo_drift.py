"""Local drift for the demo and the end-to-end test: what missed webhooks and bugs leave behind.

After a first sync has mirrored the emulator's account, `plant_drift` edits the database with
SQL so that every drift kind shows in the next run. Each edited row's `stripe_observed_at` is
moved back an hour, as if the edit had happened before Stripe's latest state was observed:
the staleness guard only lets a strictly newer observation overwrite a row, and the
emulator's clock (and so its `Date` header) stands still between the two runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from sqlalchemy import Connection, Engine, text

AGED = "stripe_observed_at = stripe_observed_at - interval '1 hour'"

# Rows touched per drift kind: enough to see a pattern, few enough to read the report.
PER_KIND = 3
MISSED_FAILURES = 4  # past_due subscriptions whose failed payment we "missed"
LINKED_USERS = 2  # customers who sign up locally after the previous sync

# Stripe-looking ids that the emulator never hands out ("1Emu" is its tag).
GONE_CUSTOMER = "cus_1DemoDeleted00001"
GONE_SUBSCRIPTION = "sub_1DemoDeleted00001"
GONE_INVOICE = "in_1DemoDeleted00001"

_SUBS = "SELECT stripe_subscription_id FROM subscriptions WHERE user_id IS NOT NULL AND "
_ACTIVE = (
    _SUBS + "status = 'active' AND NOT cancel_at_period_end AND end_date IS NULL "
    "ORDER BY stripe_subscription_id"
)
_CANCELED = _SUBS + "status = 'canceled' AND end_date IS NOT NULL ORDER BY stripe_subscription_id"
_FAILING = (
    _SUBS + "status = 'past_due' AND EXISTS (SELECT 1 FROM invoices i WHERE "
    "i.stripe_subscription_id = subscriptions.stripe_subscription_id AND i.status = 'open' "
    "AND i.attempt_count >= 1 AND i.amount_remaining > 0) ORDER BY stripe_subscription_id"
)
_PAID = (
    "SELECT stripe_invoice_id FROM invoices WHERE status = 'paid' AND amount_due > 0 "
    "ORDER BY stripe_invoice_id"
)
_UNLINKED = (
    "SELECT DISTINCT stripe_customer_id FROM subscriptions WHERE user_id IS NULL "
    "ORDER BY stripe_customer_id"
)

_SUB_IDS = "stripe_subscription_id = ANY(CAST(:ids AS text[]))"
_INV_IDS = "stripe_invoice_id = ANY(CAST(:ids AS text[]))"
_OF_SUBS = "stripe_customer_id IN (SELECT stripe_customer_id FROM subscriptions WHERE " + _SUB_IDS
_EDITS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "missing_local": (f"DELETE FROM subscriptions WHERE {_SUB_IDS}",),
    "current_period_end": (
        "UPDATE subscriptions SET current_period_end = current_period_end - interval '1 month', "
        f"{AGED} WHERE {_SUB_IDS}",
    ),
    "end_date": (
        f"UPDATE subscriptions SET end_date = end_date - interval '2 days', {AGED} "
        f"WHERE {_SUB_IDS}",
    ),
    "cancel_at_period_end": (
        f"UPDATE subscriptions SET cancel_at_period_end = true, {AGED} WHERE {_SUB_IDS}",
    ),
    "price": (
        "UPDATE subscriptions s SET stripe_price_id = (SELECT min(o.stripe_price_id) FROM "
        "subscriptions o WHERE o.stripe_price_id <> s.stripe_price_id), "
        f"stripe_observed_at = s.stripe_observed_at - interval '1 hour' WHERE s.{_SUB_IDS}",
    ),
    "user_status": (f"UPDATE users SET subscription_status = 'canceled' WHERE {_OF_SUBS})",),
    # A failed renewal whose webhooks never arrived: we still think the customer pays.
    "status": (
        f"UPDATE subscriptions SET status = 'active', {AGED} WHERE {_SUB_IDS}",
        "UPDATE invoices SET attempt_count = 0, next_payment_attempt = NULL, "
        f"payment_failed_at = NULL, {AGED} WHERE status = 'open' AND {_SUB_IDS}",
        "DELETE FROM notifications WHERE stripe_invoice_id IN (SELECT stripe_invoice_id "
        f"FROM invoices WHERE {_SUB_IDS})",
        f"UPDATE users SET subscription_status = 'active' WHERE {_OF_SUBS})",
    ),
    "invoice_missing_local": (f"DELETE FROM invoices WHERE {_INV_IDS}",),
    "invoice_status": (
        f"UPDATE invoices SET status = 'open', amount_remaining = amount_due, {AGED} "
        f"WHERE {_INV_IDS}",
    ),
    "invoice_amounts": (
        f"UPDATE invoices SET amount_due = amount_due + 500, {AGED} WHERE {_INV_IDS}",
    ),
    "invoice_field": (
        "UPDATE invoices SET customer_email = 'old-address@example.com', "
        f"{AGED} WHERE {_INV_IDS}",
    ),
    "unknown_customer": (
        "INSERT INTO users (email, stripe_customer_id) SELECT "
        "'new-signup-' || c || '@example.com', c FROM unnest(CAST(:ids AS text[])) AS c",
    ),
})

# Known to us, unknown to Stripe (deleted there, say, by a test-data clean-up): a complete
# listing does not return them and a retrieve answers 404.
_GONE = (
    "INSERT INTO users (email, stripe_customer_id, subscription_status) "
    "VALUES ('former.customer@example.com', :customer, 'active')",
    "INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, status, "
    "current_period_end, stripe_price_id, stripe_created, stripe_observed_at) "
    "SELECT :sub, u.id, :customer, 'active', t.at + interval '20 days', "
    "(SELECT min(stripe_price_id) FROM subscriptions), t.at - interval '40 days', t.at "
    "FROM users u, (SELECT min(stripe_observed_at) - interval '1 day' AS at "
    "FROM subscriptions) t WHERE u.stripe_customer_id = :customer",
    "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, stripe_customer_id, "
    "status, amount_due, amount_remaining, currency, created, stripe_observed_at) "
    "SELECT :invoice, :sub, :customer, 'open', 2900, 2900, 'usd', stripe_created, "
    "stripe_observed_at FROM subscriptions WHERE stripe_subscription_id = :sub",
)


def _pick(conn: Connection, sql: str, count: int, taken: set[str]) -> list[str]:
    """The first `count` ids `sql` lists that no earlier pick took (deterministic order)."""
    found = [str(i) for i in conn.execute(text(sql)).scalars() if str(i) not in taken]
    if len(found) < count:
        raise ValueError(f"not enough rows to plant drift: {sql[:80]}…; seed more customers")
    taken.update(found[:count])
    return found[:count]


def plant_drift(engine: Engine) -> dict[str, tuple[str, ...]]:
    """Edit a synced database so the next run finds every drift kind; returns the ids per kind.

    The database must hold a completed sync of an account with active, past_due and canceled
    subscriptions, paid invoices, and a few customers without a local user.
    """
    with engine.begin() as conn:
        subs: set[str] = set()
        invoices: set[str] = set()
        picks: dict[str, list[str]] = {
            "missing_local": _pick(conn, _ACTIVE, PER_KIND, subs),
            "current_period_end": _pick(conn, _ACTIVE, PER_KIND, subs),
            "cancel_at_period_end": _pick(conn, _ACTIVE, PER_KIND, subs),
            "price": _pick(conn, _ACTIVE, PER_KIND, subs),
            "user_status": _pick(conn, _ACTIVE, PER_KIND, subs),
            "end_date": _pick(conn, _CANCELED, PER_KIND, subs),
            "status": _pick(conn, _FAILING, MISSED_FAILURES, subs),
            "invoice_missing_local": _pick(conn, _PAID, PER_KIND, invoices),
            "invoice_status": _pick(conn, _PAID, PER_KIND, invoices),
            "invoice_amounts": _pick(conn, _PAID, PER_KIND, invoices),
            "invoice_field": _pick(conn, _PAID, PER_KIND, invoices),
            "unknown_customer": _pick(conn, _UNLINKED, LINKED_USERS, set()),
        }
        for kind, ids in picks.items():
            for sql in _EDITS[kind]:
                conn.execute(text(sql), {"ids": ids})
        gone = {"customer": GONE_CUSTOMER, "sub": GONE_SUBSCRIPTION, "invoice": GONE_INVOICE}
        for sql in _GONE:
            conn.execute(text(sql), gone)
    planted = {kind: tuple(ids) for kind, ids in picks.items()}
    planted["missing_in_stripe"] = (GONE_SUBSCRIPTION, GONE_INVOICE)
    return planted


def failed_invoices_of(engine: Engine, subscription_ids: Sequence[str]) -> list[str]:
    """The open invoices of these subscriptions (the failures planted under `status`)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT stripe_invoice_id FROM invoices WHERE status = 'open' AND {_SUB_IDS} "
                 "ORDER BY 1"),
            {"ids": list(subscription_ids)},
        ).scalars()
        return [str(r) for r in rows]
