"""The set-based diff: staged Stripe state against the mirrored tables, into `drift`.

Every statement here is one SQL pass over the staging tables; Python never holds the rows.
Each drift row says what differs (kind, object, id, field, local -> Stripe) and the action
that `apply` will take, under the same staleness guard that `apply` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from reconcile import staging
from reconcile.fields import (
    INVOICE_FIELDS,
    INVOICE_SOURCE,
    SUBSCRIPTION_FIELDS,
    SUBSCRIPTION_SOURCE,
    Field,
    any_differs,
    as_text,
    fresher,
    guard_params,
    not_regressing,
)
from reconcile.policy import USER_STATUS_PRECEDENCE


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between the database and Stripe, and what is done about it."""

    kind: str
    object: str
    stripe_id: str
    field: str | None
    local: str | None
    stripe: str | None
    action: str


def _field_rows(fields: tuple[Field, ...]) -> str:
    return ",\n".join(
        f"('{f.kind}', '{f.column}', {as_text('l.' + f.column, f.type)}, "
        f"{as_text('r.' + f.column, f.type)})"
        for f in fields
    )


def _object_drift_sql(
    obj: str, table: str, key: str, source: str, fields: tuple[Field, ...], terminal: str
) -> str:
    missing_kind = "missing_local" if obj == "subscription" else "invoice_missing_local"
    return f"""
    INSERT INTO drift (kind, object, stripe_id, field, local, stripe, action)
    WITH r AS ({source})
    SELECT '{missing_kind}', '{obj}', r.{key}, NULL, NULL, r.status, 'insert'
      FROM r WHERE NOT EXISTS (SELECT 1 FROM {table} l WHERE l.{key} = r.{key})
    UNION ALL
    SELECT k.kind, '{obj}', r.{key}, k.field, k.lv, k.rv, 'update'
      FROM r JOIN {table} l ON l.{key} = r.{key}
      CROSS JOIN LATERAL (VALUES {_field_rows(fields)}) AS k(kind, field, lv, rv)
     WHERE {fresher("l", "r.observed_at")}
       AND {not_regressing("l", "r.status", terminal)}
       AND {any_differs(fields, "l", "r")}  -- prunes unchanged rows before the lateral
       AND k.lv IS DISTINCT FROM k.rv
    """


_CUSTOMER_DRIFT = f"""
    INSERT INTO drift (kind, object, stripe_id, field, local, stripe, action)
    WITH r AS ({SUBSCRIPTION_SOURCE})
    SELECT 'unknown_customer', 'subscription', r.stripe_subscription_id, 'stripe_customer_id',
           NULL, r.stripe_customer_id, 'report'
      FROM r WHERE NOT EXISTS (
           SELECT 1 FROM users u WHERE u.stripe_customer_id = r.stripe_customer_id)
    UNION ALL
    SELECT 'unknown_customer', 'subscription', l.stripe_subscription_id, 'user_id',
           NULL, u.id::text, 'link'
      FROM r JOIN subscriptions l ON l.stripe_subscription_id = r.stripe_subscription_id
      JOIN users u ON u.stripe_customer_id = r.stripe_customer_id
     WHERE l.user_id IS NULL
"""

_GONE_DRIFT = """
    INSERT INTO drift (kind, object, stripe_id, field, local, stripe, action)
    SELECT 'missing_in_stripe', 'subscription', l.stripe_subscription_id, 'status', l.status,
           NULL, 'cancel'
      FROM stage_gone g JOIN subscriptions l ON l.stripe_subscription_id = g.stripe_id
     WHERE g.object = 'subscription' AND l.stripe_observed_at < g.observed_at
       AND l.status <> ALL(CAST(:sub_terminal AS text[]))
    UNION ALL
    SELECT 'missing_in_stripe', 'invoice', l.stripe_invoice_id, 'status', l.status,
           NULL, 'mark_gone'
      FROM stage_gone g JOIN invoices l ON l.stripe_invoice_id = g.stripe_id
     WHERE g.object = 'invoice' AND l.stripe_observed_at < g.observed_at
       AND l.status <> 'deleted'
"""

# The users whose status may move: those whose subscriptions were staged or confirmed gone.
_USER_DRIFT = """
    INSERT INTO drift (kind, object, stripe_id, field, local, stripe, action)
    WITH customers AS (
        SELECT stripe_customer_id FROM stage_subscriptions
        UNION
        SELECT l.stripe_customer_id FROM stage_gone g
          JOIN subscriptions l
            ON g.object = 'subscription' AND l.stripe_subscription_id = g.stripe_id
    ), ranked AS (
        -- The best rank per user, by hash aggregate (no sort). Ranks map 1:1 to known
        -- statuses; an unknown (future) status ranks last and is carried as text.
        SELECT l.user_id,
               min(COALESCE(array_position(CAST(:precedence AS text[]), l.status), 1000))
                   AS best,
               max(l.status) FILTER (
                   WHERE array_position(CAST(:precedence AS text[]), l.status) IS NULL
               ) AS unknown
          FROM subscriptions l JOIN users u ON u.id = l.user_id
         WHERE u.stripe_customer_id IN (SELECT stripe_customer_id FROM customers)
         GROUP BY l.user_id
    ), derived AS (
        SELECT user_id,
               CASE WHEN best < 1000 THEN (CAST(:precedence AS text[]))[best] ELSE unknown END
                   AS status
          FROM ranked
    )
    SELECT 'user_status', 'user', u.stripe_customer_id, 'subscription_status',
           u.subscription_status, d.status, 'update'
      FROM derived d JOIN users u ON u.id = d.user_id
     WHERE u.subscription_status IS DISTINCT FROM d.status
"""


_SUB_DRIFT = text(_object_drift_sql(
    "subscription", "subscriptions", "stripe_subscription_id", SUBSCRIPTION_SOURCE,
    SUBSCRIPTION_FIELDS, "sub_terminal",
))
_INV_DRIFT = text(_object_drift_sql(
    "invoice", "invoices", "stripe_invoice_id", INVOICE_SOURCE, INVOICE_FIELDS, "inv_terminal",
))
_CUSTOMER_DRIFT_SQL = text(_CUSTOMER_DRIFT)
_GONE_DRIFT_SQL = text(_GONE_DRIFT)
_USER_DRIFT_SQL = text(_USER_DRIFT)


def diff_objects(conn: Connection, *, allow_tie: bool = False) -> None:
    """Record subscription, invoice, customer-link and gone drift from the staging tables."""
    params = guard_params(allow_tie=allow_tie)
    conn.execute(_SUB_DRIFT, params)
    conn.execute(_INV_DRIFT, params)
    conn.execute(_CUSTOMER_DRIFT_SQL)
    conn.execute(_GONE_DRIFT_SQL, params)


def diff_users(conn: Connection) -> None:
    """Record user status drift; run after subscriptions are applied (inside the txn)."""
    conn.execute(_USER_DRIFT_SQL, {"precedence": list(USER_STATUS_PRECEDENCE)})


def counts(conn: Connection) -> dict[str, int]:
    """Drift entries per kind."""
    rows = conn.execute(text("SELECT kind, count(*) FROM drift GROUP BY kind ORDER BY kind"))
    return {str(kind): int(n) for kind, n in rows}


def changed_rows(conn: Connection) -> int:
    """How many database rows the recorded drift would change (reports excluded)."""
    found = conn.execute(
        text("SELECT count(DISTINCT (object, stripe_id)) FROM drift WHERE action <> 'report'")
    ).scalar_one()
    return int(found)


def entries(conn: Connection, *, limit: int | None = None) -> list[Drift]:
    """Drift entries in a stable order, at most `limit` of them."""
    rows = conn.execute(
        text(
            "SELECT kind, object, stripe_id, field, local, stripe, action FROM drift "
            "ORDER BY kind, object, stripe_id, field NULLS FIRST LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [Drift(*row) for row in rows]


def clear(conn: Connection) -> None:
    """Forget recorded drift (the webhook path reuses one connection's tables)."""
    conn.execute(text("DELETE FROM drift"))


def _conflict_sql(obj: str, table: str, key: str, source: str, fields: tuple[Field, ...]) -> str:
    return f"""
    WITH r AS ({source})
    SELECT '{obj}', r.{key} FROM r JOIN {table} l ON l.{key} = r.{key}
     WHERE l.stripe_observed_at >= r.observed_at AND {any_differs(fields, "l", "r")}
    """


def conflicts(conn: Connection) -> list[tuple[str, str]]:
    """Staged objects the guard cannot settle: not newer than the row, yet different.

    A same-second tie or a late, older event that disagrees with the row: only Stripe's
    current object can say which is right, so the webhook path re-fetches these.
    """
    staging.dedupe(conn)
    found: list[tuple[str, str]] = []
    for sql in (
        _conflict_sql("subscription", "subscriptions", "stripe_subscription_id",
                      SUBSCRIPTION_SOURCE, SUBSCRIPTION_FIELDS),
        _conflict_sql("invoice", "invoices", "stripe_invoice_id", INVOICE_SOURCE, INVOICE_FIELDS),
    ):
        found.extend((str(o), str(i)) for o, i in conn.execute(text(sql)))
    return found
