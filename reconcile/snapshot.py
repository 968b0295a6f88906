"""Stripe payloads (plain JSON, any API shape) -> frozen state values.  [pure]

The pinned API (2026-10-28.endive) keeps a subscription's period on `items.data[]` and an
invoice's subscription under `parent.subscription_details`; webhook endpoints pinned to older
versions and emulators still send the older top-level fields. We read both and prefer the new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class PayloadError(ValueError):
    """A Stripe payload lacks a field we cannot do without."""


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """What Stripe says about one subscription at `observed_at` (Stripe's clock)."""

    stripe_subscription_id: str
    stripe_customer_id: str
    status: str
    current_period_end: datetime | None
    end_date: datetime | None
    cancel_at_period_end: bool
    stripe_price_id: str | None
    stripe_created: datetime | None
    livemode: bool
    observed_at: datetime

    def as_row(self) -> tuple[object, ...]:
        """Column order of the staging table (see staging.SUBSCRIPTION_COLUMNS)."""
        return (
            self.stripe_subscription_id,
            self.stripe_customer_id,
            self.status,
            self.current_period_end,
            self.end_date,
            self.cancel_at_period_end,
            self.stripe_price_id,
            self.stripe_created,
            self.observed_at,
        )


@dataclass(frozen=True, slots=True)
class InvoiceState:
    """What Stripe says about one invoice at `observed_at` (Stripe's clock)."""

    stripe_invoice_id: str
    stripe_subscription_id: str | None
    stripe_customer_id: str
    status: str
    amount_due: int
    amount_remaining: int
    currency: str
    attempt_count: int
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None
    customer_email: str | None
    created: datetime | None
    due_date: datetime | None
    livemode: bool
    observed_at: datetime
    # What the invoice bills for, for the failed-payment e-mail; the name only when the
    # payload carries the product expanded (webhook payloads never do).
    stripe_product_id: str | None = None
    product_name: str | None = None

    def as_row(self) -> tuple[object, ...]:
        """Column order of the staging table (see staging.INVOICE_COLUMNS)."""
        return (
            self.stripe_invoice_id,
            self.stripe_subscription_id,
            self.stripe_customer_id,
            self.status,
            self.amount_due,
            self.amount_remaining,
            self.currency,
            self.attempt_count,
            self.next_payment_attempt,
            self.hosted_invoice_url,
            self.customer_email,
            self.created,
            self.due_date,
            self.observed_at,
            self.stripe_product_id,
            self.product_name,
        )


def epoch(value: Any) -> datetime | None:
    """A Stripe epoch-seconds field as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"expected epoch seconds, got {value!r}")
    return datetime.fromtimestamp(value, tz=UTC)


def object_id(value: Any) -> str | None:
    """An id field that may be a plain id or an expanded object."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    raise PayloadError(f"expected an id or an object with an id, got {type(value).__name__}")


def _required(payload: Mapping[str, Any], key: str) -> Any:
    value = payload.get(key)
    if value is None:
        kind = payload.get("object", "object")
        raise PayloadError(f"{kind} {payload.get('id', '?')}: missing required field {key!r}")
    return value


def _items(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = payload.get("items")
    if isinstance(items, Mapping):
        data = items.get("data")
        if isinstance(data, list):
            return [i for i in data if isinstance(i, Mapping)]
    return []


def _period_end(payload: Mapping[str, Any], items: list[Mapping[str, Any]]) -> datetime | None:
    # Current API: each item has its own period; the subscription's access runs to the
    # latest of them. Older shapes carry it at the top level.
    ends = [i["current_period_end"] for i in items if i.get("current_period_end") is not None]
    if ends:
        return epoch(max(ends))
    return epoch(payload.get("current_period_end"))


def _price_id(items: list[Mapping[str, Any]]) -> str | None:
    for item in items:
        for key in ("price", "plan"):  # `plan` is the pre-Prices shape
            found = object_id(item.get(key))
            if found:
                return found
    return None


def subscription_from_payload(
    payload: Mapping[str, Any], observed_at: datetime
) -> SubscriptionState:
    """Normalise a subscription object of any API shape."""
    items = _items(payload)
    ended_at = epoch(payload.get("ended_at"))
    customer = object_id(_required(payload, "customer"))
    assert customer is not None  # _required rejected None
    return SubscriptionState(
        stripe_subscription_id=str(_required(payload, "id")),
        stripe_customer_id=customer,
        status=str(_required(payload, "status")),
        current_period_end=_period_end(payload, items),
        end_date=ended_at if ended_at is not None else epoch(payload.get("cancel_at")),
        cancel_at_period_end=bool(payload.get("cancel_at_period_end") or False),
        stripe_price_id=_price_id(items),
        stripe_created=epoch(payload.get("created")),
        livemode=bool(payload.get("livemode") or False),
        observed_at=observed_at,
    )


def invoice_subscription_id(payload: Mapping[str, Any]) -> str | None:
    """The invoice's subscription: `parent.subscription_details` first, then legacy field."""
    parent = payload.get("parent")
    if isinstance(parent, Mapping):
        details = parent.get("subscription_details")
        if isinstance(details, Mapping):
            found = object_id(details.get("subscription"))
            if found:
                return found
    return object_id(payload.get("subscription"))


def _line_products(payload: Mapping[str, Any]) -> list[Any]:
    lines = payload.get("lines")
    data = lines.get("data") if isinstance(lines, Mapping) else None
    found: list[Any] = []
    for line in data if isinstance(data, list) else []:
        if not isinstance(line, Mapping):
            continue
        pricing = line.get("pricing")
        details = pricing.get("price_details") if isinstance(pricing, Mapping) else None
        if isinstance(details, Mapping) and details.get("product"):
            found.append(details["product"])
        for key in ("price", "plan"):  # older API versions
            price = line.get(key)
            if isinstance(price, Mapping) and price.get("product"):
                found.append(price["product"])
    return found


def invoice_product(payload: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(product id, product name) of the invoice's first line that names a product.

    The name is only known when the product is expanded; a plain id gives (id, None).
    """
    for product in _line_products(payload):
        product_id = object_id(product)
        if product_id:
            name = product.get("name") if isinstance(product, Mapping) else None
            return product_id, name if isinstance(name, str) and name else None
    return None, None


def invoice_from_payload(payload: Mapping[str, Any], observed_at: datetime) -> InvoiceState:
    """Normalise an invoice object of any API shape."""
    customer = object_id(_required(payload, "customer"))
    assert customer is not None
    product_id, product_name = invoice_product(payload)
    return InvoiceState(
        stripe_invoice_id=str(_required(payload, "id")),
        stripe_subscription_id=invoice_subscription_id(payload),
        stripe_customer_id=customer,
        status=str(_required(payload, "status")),
        amount_due=int(payload.get("amount_due") or 0),
        amount_remaining=int(payload.get("amount_remaining") or 0),
        currency=str(payload.get("currency") or ""),
        attempt_count=int(payload.get("attempt_count") or 0),
        next_payment_attempt=epoch(payload.get("next_payment_attempt")),
        hosted_invoice_url=payload.get("hosted_invoice_url"),
        customer_email=payload.get("customer_email"),
        created=epoch(payload.get("created")),
        due_date=epoch(payload.get("due_date")),
        livemode=bool(payload.get("livemode") or False),
        observed_at=observed_at,
        stripe_product_id=product_id,
        product_name=product_name,
    )
