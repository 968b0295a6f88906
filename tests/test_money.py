"""Stripe amounts formatted for people: two-, zero- and three-decimal currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from reconcile.money import format_amount, minor_unit_exponent, to_decimal


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1500, "usd", "$15.00"),
        (150000, "USD", "$1,500.00"),
        (999, "eur", "€9.99"),
        (5, "gbp", "£0.05"),
        (1500, "jpy", "¥1,500"),
        (25000, "krw", "₩25,000"),
        (1500, "clp", "CLP 1,500"),
        (12345, "kwd", "KWD 12.345"),
        (12300, "isk", "ISK 123"),
        (1999, "chf", "CHF 19.99"),
        (1999, "cad", "CA$19.99"),
        (-500, "usd", "-$5.00"),
        (0, "jpy", "¥0"),
    ],
)
def test_format_amount(amount: int, currency: str, shown: str) -> None:
    """Each currency shows its own symbol (or code) and its own number of decimals."""
    assert format_amount(amount, currency) == shown


def test_zero_decimal_amounts_are_whole_units() -> None:
    """1500 in JPY is ¥1,500, not ¥15.00: Stripe sends zero-decimal amounts as they are."""
    assert minor_unit_exponent("jpy") == 0
    assert to_decimal(1500, "jpy") == Decimal(1500)
    assert to_decimal(1500, "usd") == Decimal("15.00")
