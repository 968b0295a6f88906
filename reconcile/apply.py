"""The one writer: staged Stripe state -> mirrored tables, under the staleness guard.

The batch job and the webhook receiver both stage what they observed and call
`reconcile_staged`, inside the caller's transaction. It records the drift it is about to
correct (for reports and logs), then writes only rows that differ and are older than the
observation, never moving an object out of a terminal status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, TextClause, text

from reconcile import diff, outbox, staging
from reconcile.fields import (
    INVOICE_FIELDS,
    INVOICE_SOURCE,
    SUBSCRIPTION_FIELDS,
    SUBSCRIPTION_SOURCE,
    Field,
    any_differs,
    fresher,
    guard_params,
    not_regressing,
)


@dataclass(frozen=True, slots=True)
class Applied:
    """Rows written by one call of `reconcile_staged`."""

    subscriptions_inserted: int = 0
    subscriptions_updated: int = 0
    invoices_inserted: int = 0
    invoices_updated: int = 0
    users_linked: int = 0
    marked_gone: int = 0
    users_updated: int = 0
    # Outbox rows, not mirrored rows: kept out of `total` and so out of the safety valve.
    notifications_queued: int = 0
    notifications_canceled: int = 0

    @property
    def total(self) -> int:
        """Every row write, for the summary and the safety valve's cross-check."""
        return (
            self.subscriptions_inserted
            + self.subscriptions_updated
            + self.invoices_inserted
            + self.invoices_updated
            + self.users_linked
            + self.marked_gone
            + self.users_updated
        )


def _update_sql(
    table: str, key: str, source: str, fields: tuple[Field, ...], terminal: str
) -> str:
    sets = ", ".join(f"{f.column} = r.{f.column}" for f in fields)
    return f"""
    WITH r AS ({source})
    UPDATE {table} AS l SET {sets}, stripe_observed_at = r.observed_at, updated_at = now()
      FROM r
     WHERE l.{key} = r.{key}
       AND {fresher("l", "r.observed_at")}
       AND {not_regressing("l", "r.status", terminal)}
       AND {any_differs(fields, "l", "r")}
    """


def _insert_sql(
    table: str, key: str, source: str, fields: tuple[Field, ...], terminal: str, extra: str
) -> str:
    # Rows missing when we looked are inserted. One a concurrent writer inserted meanwhile
    # gets the same guarded update as `_update_sql`: the fresher observation wins either way.
    columns = [key, *(f.column for f in fields if f.column != key)]
    cols = ", ".join(columns)
    vals = ", ".join(f"r.{c}" for c in columns)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    extra_cols, extra_vals, extra_set, join = "", "", "", ""
    if extra == "user":
        extra_cols, extra_vals = ", user_id", ", u.id"
        extra_set = ", user_id = COALESCE(l.user_id, EXCLUDED.user_id)"
        join = "LEFT JOIN users u ON u.stripe_customer_id = r.stripe_customer_id"
    return f"""
    WITH r AS ({source})
    INSERT INTO {table} AS l ({cols}, stripe_observed_at{extra_cols})
    SELECT {vals}, r.observed_at{extra_vals} FROM r {join}
     WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key} = r.{key})
    ON CONFLICT ({key}) DO UPDATE
       SET {sets}, stripe_observed_at = EXCLUDED.stripe_observed_at,
           updated_at = now(){extra_set}
     WHERE {fresher("l", "EXCLUDED.stripe_observed_at")}
       AND {not_regressing("l", "EXCLUDED.status", terminal)}
       AND {any_differs(fields, "l", "EXCLUDED")}
    """


_SUB_UPDATE = text(_update_sql(
    "subscriptions",
    "stripe_subscription_id",
    SUBSCRIPTION_SOURCE,
    SUBSCRIPTION_FIELDS,
    "sub_terminal",
))
_SUB_INSERT = text(_insert_sql(
    "subscriptions", "stripe_subscription_id", SUBSCRIPTION_SOURCE, SUBSCRIPTION_FIELDS,
    "sub_terminal", "user",
))
_INV_UPDATE = text(_update_sql(
    "invoices", "stripe_invoice_id", INVOICE_SOURCE, INVOICE_FIELDS, "inv_terminal"
))
_INV_INSERT = text(_insert_sql(
    "invoices", "stripe_invoice_id", INVOICE_SOURCE, INVOICE_FIELDS, "inv_terminal", ""
))

_LINK_USERS = text("""
    UPDATE subscriptions l SET user_id = u.id, updated_at = now()
      FROM users u
     WHERE l.user_id IS NULL AND u.stripe_customer_id = l.stripe_customer_id
       AND l.stripe_subscription_id IN (SELECT stripe_subscription_id FROM stage_subscriptions)
""")

# Only a retrieve that answered 404 puts an id in stage_gone; a subscription Stripe deleted
# has ended, and a deleted draft invoice is kept (nothing is lost) but marked.
_GONE_SUBSCRIPTIONS = text("""
    UPDATE subscriptions l SET status = 'canceled', end_date = COALESCE(l.end_date, g.observed_at),
           stripe_observed_at = g.observed_at, updated_at = now()
      FROM stage_gone g
     WHERE g.object = 'subscription' AND l.stripe_subscription_id = g.stripe_id
       AND l.stripe_observed_at < g.observed_at
       AND l.status <> ALL(CAST(:sub_terminal AS text[]))
""")
_GONE_INVOICES = text("""
    UPDATE invoices l SET status = 'deleted', stripe_observed_at = g.observed_at,
           updated_at = now()
      FROM stage_gone g
     WHERE g.object = 'invoice' AND l.stripe_invoice_id = g.stripe_id
       AND l.stripe_observed_at < g.observed_at AND l.status <> 'deleted'
""")

_USERS = text("""
    UPDATE users u SET subscription_status = d.stripe
      FROM drift d
     WHERE d.kind = 'user_status' AND u.stripe_customer_id = d.stripe_id
""")


def reconcile_staged(
    conn: Connection,
    *,
    allow_tie: bool = False,
    event_type: str | None = None,
    notify_max_age: timedelta = timedelta(hours=72),
) -> Applied:
    """Diff and apply everything staged on `conn`, in the caller's transaction.

    `allow_tie` is for state just re-fetched from Stripe (see fields.fresher). `event_type`
    is the webhook event that carried the state (None for the batch), for effects that
    depend on what happened rather than on the resulting state. Failed payments are queued
    for notification in the same transaction (see reconcile.outbox); those older than
    `notify_max_age` are recorded as suppressed.
    """
    params = guard_params(allow_tie=allow_tie)
    staging.dedupe(conn)
    diff.diff_objects(conn, allow_tie=allow_tie)

    def run(statement: TextClause) -> int:
        return int(conn.execute(statement, params).rowcount)

    sub_updated = run(_SUB_UPDATE)
    sub_inserted = run(_SUB_INSERT)
    outbox.note_failures(conn, params, event_type=event_type)  # needs the rows not yet updated
    inv_updated = run(_INV_UPDATE)
    inv_inserted = run(_INV_INSERT)
    linked = run(_LINK_USERS)
    gone = run(_GONE_SUBSCRIPTIONS) + run(_GONE_INVOICES)
    diff.diff_users(conn)
    users = run(_USERS)
    notes = outbox.after_apply(conn, event_type=event_type, max_age=notify_max_age)
    return Applied(
        subscriptions_inserted=sub_inserted,
        subscriptions_updated=sub_updated,
        invoices_inserted=inv_inserted,
        invoices_updated=inv_updated,
        users_linked=linked,
        marked_gone=gone,
        users_updated=users,
        notifications_queued=notes.queued,
        notifications_canceled=notes.canceled,
    )
