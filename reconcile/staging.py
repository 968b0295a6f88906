"""Staging tables: where observed Stripe state waits, per transaction, to be diffed and applied.

Both paths stage first: the batch streams whole listings in with COPY, the webhook stages the
one object its event carries. `install` makes an engine create the temp tables once per
database connection, in a transaction of their own (so a rolled-back dry run cannot take them
away); they are emptied at every commit, so a webhook request pays no DDL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, text

from reconcile.snapshot import InvoiceState, SubscriptionState

SUBSCRIPTION_COLUMNS = (
    "stripe_subscription_id",
    "stripe_customer_id",
    "status",
    "current_period_end",
    "end_date",
    "cancel_at_period_end",
    "stripe_price_id",
    "stripe_created",
    "observed_at",
)
INVOICE_COLUMNS = (
    "stripe_invoice_id",
    "stripe_subscription_id",
    "stripe_customer_id",
    "status",
    "amount_due",
    "amount_remaining",
    "currency",
    "attempt_count",
    "next_payment_attempt",
    "hosted_invoice_url",
    "customer_email",
    "created",
    "due_date",
    "observed_at",
    "stripe_product_id",
    "product_name",
)

# Binary COPY needs each column's type; it is about four times faster than text COPY
# (measured: 100,000 subscriptions in 0.09 s against 0.39 s).
SUBSCRIPTION_TYPES = (
    "text", "text", "text", "timestamptz", "timestamptz", "bool", "text", "timestamptz",
    "timestamptz",
)
INVOICE_TYPES = (
    "text", "text", "text", "text", "int8", "int8", "text", "int4", "timestamptz", "text",
    "text", "timestamptz", "timestamptz", "timestamptz", "text", "text",
)

_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_subscriptions (
    stripe_subscription_id text COLLATE "C" NOT NULL,
    stripe_customer_id text COLLATE "C" NOT NULL,
    status text NOT NULL,
    current_period_end timestamptz,
    end_date timestamptz,
    cancel_at_period_end boolean NOT NULL,
    stripe_price_id text COLLATE "C",
    stripe_created timestamptz,
    observed_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_invoices (
    stripe_invoice_id text COLLATE "C" NOT NULL,
    stripe_subscription_id text COLLATE "C",
    stripe_customer_id text COLLATE "C" NOT NULL,
    status text NOT NULL,
    amount_due bigint NOT NULL,
    amount_remaining bigint NOT NULL,
    currency text NOT NULL,
    attempt_count integer NOT NULL,
    next_payment_attempt timestamptz,
    hosted_invoice_url text,
    customer_email text,
    created timestamptz,
    due_date timestamptz,
    observed_at timestamptz NOT NULL,
    stripe_product_id text COLLATE "C",
    product_name text
) ON COMMIT DELETE ROWS;
-- Objects Stripe confirmed gone (a retrieve answered 404).
CREATE TEMP TABLE IF NOT EXISTS stage_gone (
    object text NOT NULL,
    stripe_id text COLLATE "C" NOT NULL,
    observed_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS drift (
    kind text NOT NULL,
    object text NOT NULL,
    stripe_id text COLLATE "C" NOT NULL,
    field text,
    local text,
    stripe text,
    action text NOT NULL
) ON COMMIT DELETE ROWS;
"""


_READY = "reconcile_stage_ready"
_STATEMENTS = tuple(s for s in _DDL.split(";") if s.strip())


def install(engine: Engine) -> None:
    """Create the staging tables on each new connection of `engine`, committed at once."""

    @event.listens_for(engine, "connect")
    def _create(dbapi_conn: Any, record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            for statement in _STATEMENTS:
                cur.execute(statement)
        dbapi_conn.commit()
        record.info[_READY] = True


def prepare(conn: Connection) -> None:
    """Make sure this connection has the staging tables.

    Free on engines set up by `install`; elsewhere the tables are created inside the current
    transaction (and again after a rollback took them away).
    """
    if conn.info.get(_READY):
        return
    for statement in _STATEMENTS:
        conn.execute(text(statement))


def _copy(
    conn: Connection, table: str, columns: tuple[str, ...], types: tuple[str, ...],
    rows: Iterable[Any],
) -> int:
    """Stream rows into a staging table with binary COPY; returns how many were written."""
    raw = conn.connection.driver_connection
    assert raw is not None
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cur, cur.copy(statement) as cp:
        cp.set_types(list(types))
        for row in rows:
            cp.write_row(row)
            count += 1
    return count


def stage_subscriptions(conn: Connection, states: Iterable[SubscriptionState]) -> int:
    """Stage subscription states; the iterable may be a lazy stream of any length."""
    prepare(conn)
    rows = (s.as_row() for s in states)
    return _copy(conn, "stage_subscriptions", SUBSCRIPTION_COLUMNS, SUBSCRIPTION_TYPES, rows)


def stage_invoices(conn: Connection, states: Iterable[InvoiceState]) -> int:
    """Stage invoice states; the iterable may be a lazy stream of any length."""
    prepare(conn)
    rows = (s.as_row() for s in states)
    return _copy(conn, "stage_invoices", INVOICE_COLUMNS, INVOICE_TYPES, rows)


def stage_gone(conn: Connection, obj: str, stripe_id: str, observed_at: datetime) -> None:
    """Record that Stripe confirmed `stripe_id` no longer exists."""
    prepare(conn)
    conn.execute(
        text("INSERT INTO stage_gone (object, stripe_id, observed_at) VALUES (:o, :i, :t)"),
        {"o": obj, "i": stripe_id, "t": observed_at},
    )


def analyze(conn: Connection) -> None:
    """Temp tables are never auto-analysed; a big batch needs statistics for good joins.

    Row counts and rough distributions are all the joins need, so a small sample will do
    (the setting lasts until the transaction ends).
    """
    conn.execute(text("SET LOCAL default_statistics_target = 10"))
    conn.execute(text("ANALYZE stage_subscriptions"))
    conn.execute(text("ANALYZE stage_invoices"))


_CLEAR = tuple(text(f"DELETE FROM {t}") for t in ("stage_subscriptions", "stage_invoices",
                                                  "stage_gone", "drift"))


def clear(conn: Connection) -> None:
    """Empty the staging tables inside a transaction, to stage and apply again."""
    prepare(conn)
    for statement in _CLEAR:
        conn.execute(statement)


# An object staged twice (overlapping invoice listings, a confirmation retrieve, two events
# in one transaction) keeps only its newest observation; ties keep the one staged last.
_DEDUPE = tuple(
    text(
        f"DELETE FROM {table} a USING {table} b WHERE a.{key} = b.{key} "
        "AND (a.observed_at, a.ctid) < (b.observed_at, b.ctid)"
    )
    for table, key in (("stage_subscriptions", "stripe_subscription_id"),
                       ("stage_invoices", "stripe_invoice_id"))
)


def dedupe(conn: Connection) -> None:
    """Leave one row per object in the staging tables: its newest observation."""
    for statement in _DEDUPE:
        conn.execute(statement)
