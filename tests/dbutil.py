"""Small helpers for database tests: seed users and local rows, dump table contents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

MIRRORED = ("users", "subscriptions", "invoices", "reconcile_account")


def add_user(engine: Engine, customer: str | None, *, status: str | None = None) -> int:
    """Insert a user as the host application would; returns its id."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO users (email, stripe_customer_id, subscription_status) "
                    "VALUES (:e, :c, :s) RETURNING id"
                ),
                {"e": f"{customer}@example.com", "c": customer, "s": status},
            ).scalar_one()
        )


def dump(engine: Engine, tables: tuple[str, ...] = MIRRORED) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables, ordered, for before/after comparisons."""
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
                for t in tables}


def subscription_row(engine: Engine, sub_id: str) -> dict[str, Any]:
    """One subscription row as a dict."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM subscriptions WHERE stripe_subscription_id = :i"), {"i": sub_id}
        ).mappings().one()
        return dict(row)


def invoice_row(engine: Engine, inv_id: str) -> dict[str, Any]:
    """One invoice row as a dict."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM invoices WHERE stripe_invoice_id = :i"), {"i": inv_id}
        ).mappings().one()
        return dict(row)


def user_status(engine: Engine, customer: str) -> str | None:
    """A user's subscription_status."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT subscription_status FROM users WHERE stripe_customer_id = :c"),
            {"c": customer},
        ).scalar_one()
        return None if found is None else str(found)


def _overwrite(engine: Engine, table: str, key: str, value: str, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with engine.begin() as conn:
        statement = text(f"UPDATE {table} SET {sets} WHERE {key} = :_key")
        conn.execute(statement, {**values, "_key": value})


def set_subscription(engine: Engine, sub_id: str, **values: Any) -> None:
    """Overwrite local columns of a subscription (plant drift)."""
    _overwrite(engine, "subscriptions", "stripe_subscription_id", sub_id, values)


def set_invoice(engine: Engine, inv_id: str, **values: Any) -> None:
    """Overwrite local columns of an invoice (plant drift)."""
    _overwrite(engine, "invoices", "stripe_invoice_id", inv_id, values)


def observed(engine: Engine, table: str, key: str, value: str) -> datetime:
    """The staleness-guard timestamp of a row."""
    with engine.connect() as conn:
        return conn.execute(  # type: ignore[no-any-return]
            text(f"SELECT stripe_observed_at FROM {table} WHERE {key} = :v"), {"v": value}
        ).scalar_one()
