"""Stripe amounts (integers in the currency's minor unit) as text people read.  [pure]

Stripe counts most currencies in hundredths, zero-decimal ones (JPY, KRW, ...) in whole
units and a few in thousandths. Formatting is locale-neutral: a symbol where it is
unambiguous, else the ISO code, and the currency's own number of decimals.
"""

from __future__ import annotations

from decimal import Decimal

# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL: frozenset[str] = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)
THREE_DECIMAL: frozenset[str] = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# Stripe takes these in hundredths for backward compatibility, but they have no usable
# minor unit: shown without decimals.
WHOLE_UNITS_IN_HUNDREDTHS: frozenset[str] = frozenset({"isk"})

# Only symbols no other common currency shares; "$" alone means USD here, others get a
# prefix (CA$, A$) as in CLDR's English short forms.
SYMBOLS: dict[str, str] = {
    "usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩",
    "cad": "CA$", "aud": "A$", "nzd": "NZ$", "hkd": "HK$", "sgd": "SG$", "mxn": "MX$",
    "brl": "R$", "cny": "CN¥", "ils": "₪", "vnd": "₫", "php": "₱", "thb": "฿",
}


def minor_unit_exponent(currency: str) -> int:
    """How many decimal places Stripe's integer amounts carry for `currency`."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def display_decimals(currency: str) -> int:
    """How many decimals to show for `currency`."""
    if currency.lower() in WHOLE_UNITS_IN_HUNDREDTHS:
        return 0
    return minor_unit_exponent(currency)


def to_decimal(amount: int, currency: str) -> Decimal:
    """The amount in major units, exactly (1500 usd -> 15.00, 1500 jpy -> 1500)."""
    return Decimal(amount).scaleb(-minor_unit_exponent(currency))


def format_amount(amount: int, currency: str) -> str:
    """A Stripe amount as text: format_amount(150000, "usd") == "$1,500.00".

    Negative amounts (credits) keep their sign in front of the symbol.
    """
    code = currency.lower()
    places = display_decimals(code)
    value = to_decimal(abs(amount), code).quantize(Decimal(1).scaleb(-places))
    number = f"{value:,.{places}f}"
    sign = "-" if amount < 0 else ""
    symbol = SYMBOLS.get(code)
    if symbol is not None:
        return f"{sign}{symbol}{number}"
    return f"{sign}{code.upper()} {number}" if code else f"{sign}{number}"
