"""Builders for subscriptions, subscription items, invoices and events, plus the legacy view."""

from __future__ import annotations

from typing import Any

from .render import items_list

Json = dict[str, Any]


class BillingShapes:
    """Builds billing objects in the pinned API version's shape."""

    def __init__(self) -> None:
        self._empty: list[Any] = []
        self._automatic_tax = {"disabled_reason": None, "enabled": False, "liability": None}
        self._billing_mode = {"flexible": None, "type": "classic"}
        self._issuer = {"type": "self"}
        self._sub_invoice_settings = {"account_tax_ids": None, "issuer": self._issuer}
        self._sub_payment_settings = {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        }
        self._trial_settings = {"end_behavior": {"missing_payment_method": "create_invoice"}}
        self._no_cancellation = {"comment": None, "feedback": None, "reason": None}
        self._inv_payment_settings = {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        }

    def cancellation(self, reason: str | None) -> Json:
        """`cancellation_details` for a reason (None: not canceled)."""
        if reason is None:
            return self._no_cancellation
        return {"comment": None, "feedback": None, "reason": reason}

    @staticmethod
    def item(
        si_id: str,
        created: int,
        *,
        sub_id: str,
        price: Json,
        plan: Json,
        quantity: int,
        period: tuple[int, int],
    ) -> Json:
        """A subscription item; since basil the billing period lives here."""
        return {
            "id": si_id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": created,
            "current_period_end": period[1],
            "current_period_start": period[0],
            "discounts": [],
            "metadata": {},
            "plan": plan,
            "price": price,
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }

    def subscription(
        self,
        sub_id: str,
        created: int,
        *,
        customer: str,
        item: Json,
        status: str,
        anchor: int,
        trial: tuple[int, int] | None,
        default_payment_method: str | None,
        metadata: Json,
    ) -> Json:
        """A subscription with its items expanded inline, as Stripe returns it."""
        return {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": self._automatic_tax,
            "billing_cycle_anchor": anchor,
            "billing_cycle_anchor_config": None,
            "billing_mode": self._billing_mode,
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": self._no_cancellation,
            "collection_method": "charge_automatically",
            "created": created,
            "currency": item["price"]["currency"],
            "customer": customer,
            "customer_account": None,
            "days_until_due": None,
            "default_payment_method": default_payment_method,
            "default_source": None,
            "default_tax_rates": self._empty,
            "description": None,
            "discounts": self._empty,
            "ended_at": None,
            "invoice_settings": self._sub_invoice_settings,
            "items": items_list(sub_id, item),
            "latest_invoice": None,
            "livemode": False,
            "metadata": metadata,
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": self._sub_payment_settings,
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": created,
            "status": status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": trial[1] if trial else None,
            "trial_settings": self._trial_settings,
            "trial_start": trial[0] if trial else None,
        }

    def invoice(
        self,
        in_id: str,
        created: int,
        *,
        customer: Json,
        sub: Json,
        line_id: str,
        billing_reason: str,
        period: tuple[int, int],
        line_period: tuple[int, int],
        amount: int,
    ) -> Json:
        """A draft subscription invoice with one line for the subscription's first item."""
        item = sub["items"]["data"][0]
        price, quantity = item["price"], item["quantity"]
        line = {
            "id": line_id,
            "object": "line_item",
            "amount": amount,
            "currency": price["currency"],
            "description": f"{quantity} x {price['nickname'] or price['product']}",
            "discount_amounts": self._empty,
            "discountable": True,
            "discounts": self._empty,
            "invoice": in_id,
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                },
                "type": "subscription_item_details",
            },
            "period": {"end": line_period[1], "start": line_period[0]},
            "pretax_credit_amounts": self._empty,
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            "quantity": quantity,
            "subtotal": amount,
            "taxes": self._empty,
        }
        return {
            "id": in_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Emulated Account",
            "account_tax_ids": None,
            "amount_due": amount,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": amount,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": self._automatic_tax,
            "automatically_finalizes_at": None,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": created,
            "currency": price["currency"],
            "custom_fields": None,
            "customer": customer["id"],
            "customer_account": None,
            "customer_address": None,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": None,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": self._empty,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": self._empty,
            "description": None,
            "discounts": self._empty,
            "due_date": None,
            "effective_at": None,
            "ending_balance": None,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": self._issuer,
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": {
                "object": "list",
                "data": [line],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/invoices/{in_id}/lines",
            },
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]},
                "type": "subscription_details",
            },
            "payment_settings": self._inv_payment_settings,
            "period_end": period[1],
            "period_start": period[0],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": amount,
            "subtotal_excluding_tax": amount,
            "test_clock": None,
            "total": amount,
            "total_discount_amounts": self._empty,
            "total_excluding_tax": amount,
            "total_pretax_credit_amounts": self._empty,
            "total_taxes": self._empty,
            "webhooks_delivered_at": None,
        }
