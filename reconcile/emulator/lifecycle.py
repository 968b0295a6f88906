"""Subscriptions: create, update, cancel, renew at period end, expire, and timed tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .billing import Billing
from .clock import add_interval, period_end_after
from .errors import ApiError, card_declined, invalid_param, no_such
from .render import items_list, sub_period
from .shapes import TEST_CARDS
from .state import State, Task
from .store import Record

Json = dict[str, Any]

ENDED = frozenset({"canceled", "incomplete_expired"})
RENEWING = frozenset({"active", "trialing", "past_due"})


@dataclass(frozen=True)
class SubscriptionChanges:
    """Typed edits for `POST /v1/subscriptions/:id`; None means "leave as is"."""

    metadata: dict[str, str | None] | None = None
    cancel_at_period_end: bool | None = None
    cancel_at: int | None = None
    clear_cancel_at: bool = False
    price: str | None = None
    quantity: int | None = None
    default_payment_method: str | None = None
    description: str | None = None
    end_trial_now: bool = False


class Subscriptions:
    """The subscription half of the billing engine."""

    def __init__(self, state: State, billing: Billing) -> None:
        self.state = state
        self.billing = billing

    def create(
        self,
        *,
        customer: str,
        price: str,
        quantity: int = 1,
        trial_end: int | None = None,
        payment_behavior: str = "allow_incomplete",
        default_payment_method: str | None = None,
        metadata: Json | None = None,
    ) -> Record:
        """Create and bill the first period (or start a trial), emitting Stripe's events."""
        st, now = self.state, self.state.clock.now
        cus = st.customers.get(customer)
        if cus is None:
            raise no_such("customer", customer, "customer")
        price_rec = self._price(price, "items[0][price]")
        if trial_end is not None and trial_end <= now:
            raise invalid_param("trial_end", "Invalid timestamp: must be in the future.")
        pm = default_payment_method or cus.data["invoice_settings"]["default_payment_method"]
        if payment_behavior == "error_if_incomplete" and trial_end is None:
            self._require_chargeable(pm, price_rec.data["unit_amount"] * quantity)
        recurring = price_rec.data["recurring"]
        if trial_end is not None:
            period, status, anchor = (now, trial_end), "trialing", trial_end
        else:
            end = add_interval(now, recurring["interval"], recurring["interval_count"])
            period, status, anchor = (now, end), "incomplete", now
        sub_id = st.ids.new("sub")
        item = st.shapes.item(
            st.ids.new("si"),
            now,
            sub_id=sub_id,
            price=price_rec.data,
            plan=st.catalog.plan(price_rec.data),
            quantity=quantity,
            period=period,
        )
        data = st.shapes.subscription(
            sub_id,
            now,
            customer=customer,
            item=item,
            status=status,
            anchor=anchor,
            trial=(now, trial_end) if trial_end is not None else None,
            default_payment_method=default_payment_method,
            metadata=dict(metadata or {}),
        )
        sub = st.subscriptions.add(Record(sub_id, now, data))
        amount = 0 if trial_end is not None else price_rec.data["unit_amount"] * quantity
        invoice = self.billing.new_invoice(
            data, reason="subscription_create", period=(now, now), line_period=period, amount=amount
        )
        st.replace(st.subscriptions, sub, {"latest_invoice": invoice.id})
        st.emit("customer.subscription.created", sub.data)
        st.emit("invoice.created", invoice.data)
        self.billing.finalize(invoice)
        if trial_end is not None:
            self.billing.record_paid(invoice, attempted=False)
        elif payment_behavior != "default_incomplete":
            self.billing.attempt(invoice, automatic=False)
        st.schedule.push(period[1], "renew", sub_id)
        if sub.data["status"] == "incomplete":
            expiry = now + int(st.policy.incomplete_expiry.total_seconds())
            st.schedule.push(expiry, "expire", sub_id)
        return sub

    def update(self, sub: Record, changes: SubscriptionChanges) -> None:
        """Apply edits and emit one customer.subscription.updated with previous_attributes."""
        st, now, data = self.state, self.state.clock.now, sub.data
        if data["status"] in ENDED and changes != SubscriptionChanges(metadata=changes.metadata):
            raise ApiError(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        out: Json = {}
        if changes.metadata is not None:
            merged = {} if not changes.metadata else dict(data["metadata"])
            for key, value in changes.metadata.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            out["metadata"] = merged
        if changes.cancel_at_period_end is not None:
            flag = changes.cancel_at_period_end
            out.update(
                cancel_at_period_end=flag,
                cancel_at=sub_period(data)[1] if flag else None,
                canceled_at=now if flag else None,
                cancellation_details=st.shapes.cancellation(
                    "cancellation_requested" if flag else None
                ),
            )
        if changes.clear_cancel_at:
            out.update(
                cancel_at=None,
                canceled_at=None,
                cancel_at_period_end=False,
                cancellation_details=st.shapes.cancellation(None),
            )
        elif changes.cancel_at is not None:
            out.update(
                cancel_at=changes.cancel_at,
                canceled_at=now,
                cancellation_details=st.shapes.cancellation("cancellation_requested"),
            )
            st.schedule.push(changes.cancel_at, "cancel_at", sub.id)
        if changes.price is not None or changes.quantity is not None:
            out["items"] = self._changed_items(data, changes)
        if changes.default_payment_method is not None:
            out["default_payment_method"] = changes.default_payment_method or None
        if changes.description is not None:
            out["description"] = changes.description or None
        if changes.end_trial_now and data["status"] == "trialing":
            item = {**data["items"]["data"][0], "current_period_end": now}
            # Ending a trial early re-anchors the billing cycle at the moment it ends.
            out.update(trial_end=now, billing_cycle_anchor=now, items=items_list(sub.id, item))
        old, new = st.replace(st.subscriptions, sub, out)
        st.emit_update("customer.subscription.updated", old, new)
        if changes.end_trial_now and old["status"] == "trialing":
            self.renew(sub, now)

    def cancel(self, sub: Record) -> None:
        """`DELETE /v1/subscriptions/:id`: cancel immediately."""
        if sub.data["status"] in ENDED:
            raise ApiError(
                400,
                f"This subscription is already {sub.data['status']}.",
                code="resource_missing",
                param="id",
            )
        self.billing.end_subscription(sub, at=self.state.clock.now, reason="cancellation_requested")

    def renew(self, sub: Record, due: int) -> None:
        """Period end: cancel if asked to, else roll the period and bill it."""
        st, data = self.state, sub.data
        start, end = sub_period(data)
        if data["status"] not in RENEWING or end != due:
            return
        cancel_at = data["cancel_at"]
        if data["cancel_at_period_end"] or (cancel_at is not None and cancel_at <= end):
            self.billing.end_subscription(sub, at=end, reason="cancellation_requested")
            return
        item = data["items"]["data"][0]
        price, quantity = item["price"], item["quantity"]
        recurring = price["recurring"]
        new_end = period_end_after(
            data["billing_cycle_anchor"], end, recurring["interval"], recurring["interval_count"]
        )
        invoice = self.billing.new_invoice(
            data,
            reason="subscription_cycle",
            period=(start, end),
            line_period=(end, new_end),
            amount=price["unit_amount"] * quantity,
        )
        new_item = {**item, "current_period_start": end, "current_period_end": new_end}
        out: Json = {"items": items_list(sub.id, new_item), "latest_invoice": invoice.id}
        if data["status"] == "trialing":
            out["status"] = "active"
        old, new = st.replace(st.subscriptions, sub, out)
        st.emit_update("customer.subscription.updated", old, new)
        st.emit("invoice.created", invoice.data)
        self.billing.finalize(invoice)
        self.billing.attempt(invoice, automatic=True)
        st.schedule.push(new_end, "renew", sub.id)

    def run(self, task: Task) -> None:
        """Carry out one due scheduled task; stale tasks do nothing."""
        if task.kind == "retry":
            self.billing.run_retry(task.obj_id, task.due)
            return
        sub = self.state.subscriptions.get(task.obj_id)
        if sub is None:
            return
        if task.kind == "renew":
            self.renew(sub, task.due)
        elif task.kind == "expire" and sub.data["status"] == "incomplete":
            self._expire(sub)
        elif (
            task.kind == "cancel_at"
            and sub.data["status"] not in ENDED
            and sub.data["cancel_at"] == task.due
        ):
            self.billing.end_subscription(sub, at=task.due, reason="cancellation_requested")

    def _expire(self, sub: Record) -> None:
        """23 hours without a paid first invoice: incomplete_expired, invoice voided."""
        st = self.state
        self.billing.set_sub_status(sub, "incomplete_expired", ended_at=st.clock.now)
        invoice = st.invoices.get(sub.data["latest_invoice"] or "")
        if invoice is not None and invoice.data["status"] == "open":
            self.billing.void(invoice)

    def _changed_items(self, data: Json, changes: SubscriptionChanges) -> Json:
        item = data["items"]["data"][0]
        new_item = dict(item)
        if changes.price is not None:
            price = self._price(changes.price, "items[0][price]").data
            new_item.update(price=price, plan=self.state.catalog.plan(price))
        if changes.quantity is not None:
            new_item["quantity"] = changes.quantity
        return items_list(data["id"], new_item)

    def _price(self, price_id: str, param: str) -> Record:
        record = self.state.prices.get(price_id)
        if record is None:
            raise no_such("price", price_id, param)
        return record

    def _require_chargeable(self, pm: str | None, amount: int) -> None:
        card = None if pm is None else TEST_CARDS.get(pm)
        if amount == 0 or (card is not None and card.decline_code is None):
            return
        if card is None:
            raise ApiError(
                400,
                "This customer has no attached payment source or default payment method.",
                code="resource_missing",
                param="payment_method",
            )
        raise card_declined(
            code=card.error_code,
            decline_code=card.decline_code or "",
            message=card.message,
            charge=self.state.ids.new("ch"),
            payment_method=card.id,
        )
