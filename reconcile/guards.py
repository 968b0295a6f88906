"""Safety guards around a run: one run at a time, the right Stripe account, the safety valve."""

from __future__ import annotations

from sqlalchemy import Connection, text

from reconcile.errors import AccountMismatchError, LockHeldError, SafetyValveError

# Any fixed 64-bit number works; this one is "stripe-reconcile" folded into a bigint.
LOCK_KEY = 0x5EC0_C11E_0000_0001


def acquire_run_lock(conn: Connection) -> None:
    """Take the transaction-scoped advisory lock or fail at once (never wait)."""
    got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}).scalar_one()
    if not got:
        raise LockHeldError(
            "another reconciliation run holds the lock",
            hint="wait for it to finish; runs are serialised per database",
        )


def _mode(livemode: bool) -> str:
    return "live mode" if livemode else "test mode"


def check_account(conn: Connection, account_id: str, livemode: bool, *, remember: bool) -> None:
    """Refuse a key of another account or mode than the one this database mirrors.

    The first run that writes remembers the account; a dry run only compares.
    """
    row = conn.execute(
        text("SELECT stripe_account_id, livemode FROM reconcile_account")
    ).one_or_none()
    if row is None:
        if remember:
            conn.execute(
                text(
                    "INSERT INTO reconcile_account (stripe_account_id, livemode) VALUES (:a, :l) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"a": account_id, "l": livemode},
            )
        return
    known_id, known_live = str(row[0]), bool(row[1])
    if (known_id, known_live) != (account_id, livemode):
        raise AccountMismatchError(
            f"this database mirrors Stripe account {known_id} ({_mode(known_live)}), "
            f"but STRIPE_API_KEY belongs to {account_id} ({_mode(livemode)})",
            hint="use that account's key, or point DATABASE_URL at the database for this one",
        )


def check_safety_valve(changed: int, max_changes: int, *, force: bool, what: str) -> None:
    """Abort before writing when more rows would change than the operator allows."""
    if not force and changed > max_changes:
        raise SafetyValveError(
            f"{changed} {what} would change, more than RECONCILE_MAX_CHANGES={max_changes}; "
            "nothing was written",
            hint="review `reconcile --dry-run`, then rerun with --force or a higher "
            "--max-changes",
        )
