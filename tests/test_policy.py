"""User status precedence and terminal states.  [pure, no I/O]"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reconcile.policy import (
    TERMINAL_INVOICE_STATUSES,
    TERMINAL_SUBSCRIPTION_STATUSES,
    derive_user_status,
    is_regression,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], None),
        (["canceled"], "canceled"),
        (["canceled", "active"], "active"),
        (["past_due", "trialing"], "trialing"),
        (["unpaid", "past_due"], "past_due"),
        (["incomplete_expired", "incomplete"], "incomplete"),
        (["some_future_status", "canceled"], "canceled"),
        (["some_future_status"], "some_future_status"),
    ],
)
def test_user_status_precedence(statuses: list[str], expected: str | None) -> None:
    """The best subscription status wins; unknown statuses rank last."""
    assert derive_user_status(statuses) == expected


@pytest.mark.parametrize(
    ("current", "incoming", "terminal", "expected"),
    [
        ("canceled", "active", TERMINAL_SUBSCRIPTION_STATUSES, True),
        ("canceled", "incomplete_expired", TERMINAL_SUBSCRIPTION_STATUSES, False),
        ("active", "canceled", TERMINAL_SUBSCRIPTION_STATUSES, False),
        ("paid", "open", TERMINAL_INVOICE_STATUSES, True),
        ("uncollectible", "paid", TERMINAL_INVOICE_STATUSES, False),
    ],
)
def test_terminal_states_are_never_left(
    current: str, incoming: str, terminal: tuple[str, ...], expected: bool
) -> None:
    """Leaving a terminal status is a regression; entering one is not."""
    assert is_regression(current, incoming, terminal) is expected


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", ["snapshot.py", "policy.py"])
def test_pure_modules_import_no_io(module: str) -> None:
    """Snapshot and policy import nothing from stripe, SQLAlchemy, psycopg or the network."""
    banned = {"stripe", "sqlalchemy", "psycopg", "requests", "urllib", "http", "sendgrid"}
    assert not (_imports(ROOT / "reconcile" / module) & banned)


def test_only_the_adapter_imports_stripe() -> None:
    """No product module outside the reconcile/stripe_api/ package imports the stripe SDK."""
    adapter = ROOT / "reconcile" / "stripe_api"
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("reconcile", "cli", "config")
        for path in (ROOT / package).rglob("*.py")
        if "stripe" in _imports(path) and adapter not in path.parents
    ]
    assert offenders == []
