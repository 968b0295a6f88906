"""Builders for customer, product, price, plan, payment method and account objects.

Builders return plain dicts in the shape of the pinned API version. Constant fragments are
built once per factory and shared between objects to keep 100k seeded objects small; this
is safe because the emulator never mutates an object in place (see `State.replace`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

Json = dict[str, Any]

CURRENT_API_VERSION = "2026-10-28.endive"
# The last version before `current_period_*` moved onto items and `invoice.subscription`
# moved under `parent` (basil, 2025-03-31).
LEGACY_API_VERSION = "2025-02-24.acacia"


@dataclass(frozen=True, slots=True)
class TestCard:
    """One of Stripe's test payment methods and how charging it ends."""

    id: str
    brand: str
    last4: str
    decline_code: str | None = None
    error_code: str = "card_declined"
    message: str = "Your card was declined."


TEST_CARDS: Mapping[str, TestCard] = MappingProxyType(
    {
        card.id: card
        for card in (
            TestCard("pm_card_visa", "visa", "4242"),
            TestCard("pm_card_mastercard", "mastercard", "4444"),
            TestCard("pm_card_chargeDeclined", "visa", "0002", "generic_decline"),
            TestCard(
                "pm_card_chargeDeclinedInsufficientFunds",
                "visa",
                "9995",
                "insufficient_funds",
                message="Your card has insufficient funds.",
            ),
            TestCard(
                "pm_card_chargeDeclinedExpiredCard",
                "visa",
                "0069",
                "expired_card",
                error_code="expired_card",
                message="Your card has expired.",
            ),
            TestCard("pm_card_chargeDeclinedFraudulent", "visa", "0019", "fraudulent"),
        )
    }
)


class CatalogShapes:
    """Builds the non-billing objects."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self._empty_list: list[Any] = []
        self._card_checks = {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        }

    def customer(
        self,
        cus_id: str,
        created: int,
        *,
        email: str | None,
        name: str | None,
        description: str | None,
        metadata: Json,
        payment_method: str | None,
    ) -> Json:
        """A customer; the default payment method lives in invoice_settings."""
        return {
            "id": cus_id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": created,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": description,
            "discount": None,
            "email": email,
            "invoice_prefix": cus_id[-8:].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": metadata,
            "name": name,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": self._empty_list,
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def product(self, prod_id: str, created: int, *, name: str, metadata: Json) -> Json:
        """A service product."""
        return {
            "id": prod_id,
            "object": "product",
            "active": True,
            "created": created,
            "default_price": None,
            "description": None,
            "images": self._empty_list,
            "livemode": False,
            "marketing_features": self._empty_list,
            "metadata": metadata,
            "name": name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": None,
            "updated": created,
            "url": None,
        }

    def price(
        self,
        price_id: str,
        created: int,
        *,
        product: str,
        unit_amount: int,
        currency: str,
        interval: str,
        interval_count: int,
        nickname: str | None,
        lookup_key: str | None,
        metadata: Json,
    ) -> Json:
        """A recurring per-unit price."""
        return {
            "id": price_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": created,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": lookup_key,
            "metadata": metadata,
            "nickname": nickname,
            "product": product,
            "recurring": {
                "interval": interval,
                "interval_count": interval_count,
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            },
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }

    @staticmethod
    def plan(price: Json) -> Json:
        """The legacy plan view of a price; Stripe still embeds it in subscription items."""
        recurring = price["recurring"]
        return {
            "id": price["id"],
            "object": "plan",
            "active": price["active"],
            "amount": price["unit_amount"],
            "amount_decimal": price["unit_amount_decimal"],
            "billing_scheme": "per_unit",
            "created": price["created"],
            "currency": price["currency"],
            "interval": recurring["interval"],
            "interval_count": recurring["interval_count"],
            "livemode": False,
            "metadata": price["metadata"],
            "meter": None,
            "nickname": price["nickname"],
            "product": price["product"],
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }

    def payment_method(self, card: TestCard, created: int, customer: str | None) -> Json:
        """A card payment method for one of the test tokens."""
        return {
            "id": card.id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {
                "brand": card.brand,
                "checks": self._card_checks,
                "country": "US",
                "display_brand": card.brand,
                "exp_month": 12,
                "exp_year": 2034,
                "fingerprint": f"fp{card.last4}Emu",
                "funding": "credit",
                "last4": card.last4,
                "networks": {"available": [card.brand], "preferred": None},
                "wallet": None,
            },
            "created": created,
            "customer": customer,
            "livemode": False,
            "metadata": {},
            "type": "card",
        }

    def account(self, created: int) -> Json:
        """The account behind the emulator's API key."""
        return {
            "id": self.account_id,
            "object": "account",
            "business_profile": {"name": "Emulated Account", "url": None, "mcc": None},
            "business_type": "company",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "country": "US",
            "created": created,
            "default_currency": "usd",
            "details_submitted": True,
            "email": "owner@example.com",
            "payouts_enabled": True,
            "settings": {"dashboard": {"display_name": "Emulated Account", "timezone": "Etc/UTC"}},
            "type": "standard",
        }
