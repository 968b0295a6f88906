"""Test helpers that create and mutate objects directly, emitting the events Stripe would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .billing import Billing
from .errors import ApiError, invalid_param, no_such
from .lifecycle import SubscriptionChanges, Subscriptions
from .routes import create_customer
from .shapes import TEST_CARDS
from .state import State
from .store import Record

Json = dict[str, Any]

SUB_STATUSES = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "paused",
)


class ObjectControls:
    """Mixin for StripeEmulator: every helper runs under the state lock."""

    def _core(self) -> tuple[State, Billing, Subscriptions]:
        raise NotImplementedError

    def _view(self, record: Record) -> Json:
        loaded: Json = json.loads(self._core()[0].wire(record))
        return loaded

    def create_customer(
        self,
        *,
        email: str | None = None,
        name: str | None = None,
        payment_method: str | None = "pm_card_visa",
        metadata: Mapping[str, str] | None = None,
    ) -> Json:
        """A customer whose default payment method is `payment_method` (a test card id)."""
        st = self._core()[0]
        if payment_method is not None and payment_method not in TEST_CARDS:
            raise invalid_param("payment_method", f"Unknown test card: {payment_method}")
        with st.lock:
            record = create_customer(
                st,
                email=email,
                name=name,
                metadata=dict(metadata or {}),
                payment_method=payment_method,
            )
            return self._view(record)

    def create_price(
        self,
        *,
        unit_amount: int = 2000,
        currency: str = "usd",
        interval: str = "month",
        interval_count: int = 1,
        product_name: str = "Emulated product",
        nickname: str | None = None,
    ) -> Json:
        """A recurring price (and a new product for it)."""
        st = self._core()[0]
        with st.lock:
            now = st.clock.now
            prod_id = st.ids.new("prod")
            product = st.catalog.product(prod_id, now, name=product_name, metadata={})
            st.products.add(Record(prod_id, now, product))
            st.emit("product.created", product)
            price_id = st.ids.new("price")
            price = st.catalog.price(
                price_id,
                now,
                product=prod_id,
                unit_amount=unit_amount,
                currency=currency,
                interval=interval,
                interval_count=interval_count,
                nickname=nickname,
                lookup_key=None,
                metadata={},
            )
            record = st.prices.add(Record(price_id, now, price))
            st.emit("price.created", price)
            return self._view(record)

    def create_subscription(
        self,
        customer: str,
        price: str,
        *,
        quantity: int = 1,
        trial_days: int | None = None,
        payment_behavior: str = "allow_incomplete",
        default_payment_method: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Json:
        """Create a subscription exactly as `POST /v1/subscriptions` would."""
        st, _, subs = self._core()
        with st.lock:
            trial_end = None if not trial_days else st.clock.now + trial_days * 86_400
            record = subs.create(
                customer=customer,
                price=price,
                quantity=quantity,
                trial_end=trial_end,
                payment_behavior=payment_behavior,
                default_payment_method=default_payment_method,
                metadata=dict(metadata or {}),
            )
            return self._view(record)

    def update_subscription(
        self,
        sub_id: str,
        *,
        cancel_at_period_end: bool | None = None,
        cancel_at: int | None = None,
        price: str | None = None,
        metadata: Mapping[str, str | None] | None = None,
    ) -> Json:
        """Edit a subscription as `POST /v1/subscriptions/:id` would."""
        st, _, subs = self._core()
        with st.lock:
            record = self._sub(sub_id)
            subs.update(
                record,
                SubscriptionChanges(
                    metadata=None if metadata is None else dict(metadata),
                    cancel_at_period_end=cancel_at_period_end,
                    cancel_at=cancel_at,
                    price=price,
                ),
            )
            return self._view(record)

    def cancel_subscription(self, sub_id: str) -> Json:
        """Cancel now, as `DELETE /v1/subscriptions/:id` would."""
        st, _, subs = self._core()
        with st.lock:
            record = self._sub(sub_id)
            subs.cancel(record)
            return self._view(record)

    def set_subscription_status(self, sub_id: str, status: str) -> Json:
        """Force a status; emits customer.subscription.updated (or .deleted for canceled)."""
        if status not in SUB_STATUSES:
            raise invalid_param("status", f"Unknown subscription status: {status}")
        st, billing, _ = self._core()
        with st.lock:
            record = self._sub(sub_id)
            if status == "canceled":
                billing.end_subscription(record, at=st.clock.now, reason="cancellation_requested")
            elif status == "incomplete_expired":
                billing.set_sub_status(record, status, ended_at=st.clock.now)
            else:
                billing.set_sub_status(record, status)
            return self._view(record)

    def set_default_payment_method(self, customer_id: str, payment_method: str | None) -> Json:
        """Change the card future charges use; emits customer.updated."""
        st = self._core()[0]
        if payment_method is not None and payment_method not in TEST_CARDS:
            raise invalid_param("payment_method", f"Unknown test card: {payment_method}")
        with st.lock:
            record = st.customers.get(customer_id)
            if record is None:
                raise no_such("customer", customer_id)
            settings = {**record.data["invoice_settings"], "default_payment_method": payment_method}
            old, new = st.replace(st.customers, record, {"invoice_settings": settings})
            st.emit_update("customer.updated", old, new)
            return self._view(record)

    def pay_invoice(self, invoice_id: str, *, payment_method: str | None = None) -> Json:
        """Attempt payment as `POST /v1/invoices/:id/pay`; raises ApiError on a decline."""
        st, billing, _ = self._core()
        with st.lock:
            record = self._invoice(invoice_id)
            billing.pay(record, payment_method=payment_method, out_of_band=False)
            return self._view(record)

    def set_invoice_status(self, invoice_id: str, status: str) -> Json:
        """Move an invoice to open, paid (out of band), void or uncollectible, with events."""
        st, billing, _ = self._core()
        with st.lock:
            record = self._invoice(invoice_id)
            current = record.data["status"]
            if current == "draft" and status != "draft":
                billing.finalize(record)
            if status == "paid":
                billing.pay(record, payment_method=None, out_of_band=True)
            elif status == "void":
                billing.void(record)
            elif status == "uncollectible":
                billing.mark_uncollectible(record)
            elif status != "open":
                raise ApiError(400, f"Cannot move invoice from {current} to {status}.")
            return self._view(record)

    def _sub(self, sub_id: str) -> Record:
        record = self._core()[0].subscriptions.get(sub_id)
        if record is None:
            raise no_such("subscription", sub_id)
        return record

    def _invoice(self, invoice_id: str) -> Record:
        record = self._core()[0].invoices.get(invoice_id)
        if record is None:
            raise no_such("invoice", invoice_id)
        return record
