"""Subscription and invoice endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .billing import Billing
from .errors import ApiError, invalid_param, missing_param, no_such
from .http_types import ApiRequest, Response
from .lifecycle import SubscriptionChanges, Subscriptions
from .params import (
    indexed_dicts,
    metadata_changes,
    opt_bool,
    opt_int,
    opt_str,
    req_str,
)
from .routes import Route, payment_method_param
from .state import State
from .store import Record
from .views import list_response, record_response

Json = dict[str, Any]

SUB_STATUSES = frozenset(
    {
        "active",
        "past_due",
        "unpaid",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "trialing",
        "paused",
        "all",
        "ended",
    }
)
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void"})
PAYMENT_BEHAVIORS = frozenset(
    {"allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"}
)


def status_predicate(status: str | None) -> Callable[[Record], bool] | None:
    """Stripe's list semantics: default hides canceled, `ended` is canceled + expired."""
    if status == "all":
        return None
    if status is None:
        return lambda r: r.data["status"] != "canceled"
    if status == "ended":
        return lambda r: r.data["status"] in ("canceled", "incomplete_expired")
    return lambda r: r.data["status"] == status


def _all(*predicates: Callable[[Record], bool] | None) -> Callable[[Record], bool] | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda r: all(p(r) for p in active)


class BillingRoutes:
    """Handlers for subscriptions and invoices."""

    def __init__(self, state: State, subscriptions: Subscriptions, billing: Billing) -> None:
        self.state = state
        self.subs = subscriptions
        self.billing = billing

    def routes(self) -> list[Route]:
        """This group's route table."""
        return [
            ("POST", "/v1/subscriptions", self.create_subscription),
            ("GET", "/v1/subscriptions", self.list_subscriptions),
            ("GET", "/v1/subscriptions/{id}", self.get_subscription),
            ("POST", "/v1/subscriptions/{id}", self.update_subscription),
            ("DELETE", "/v1/subscriptions/{id}", self.cancel_subscription),
            ("GET", "/v1/invoices", self.list_invoices),
            ("GET", "/v1/invoices/{id}", self.get_invoice),
            ("POST", "/v1/invoices/{id}/pay", self.pay_invoice),
            ("POST", "/v1/invoices/{id}/finalize", self.finalize_invoice),
            ("POST", "/v1/invoices/{id}/void", self.void_invoice),
            ("POST", "/v1/invoices/{id}/mark_uncollectible", self.mark_uncollectible),
        ]

    def create_subscription(self, req: ApiRequest) -> Response:
        """POST /v1/subscriptions (one item; trials; payment_behavior simplified)."""
        p = req.params
        items = indexed_dicts(p, "items")
        if not items:
            raise missing_param("items")
        if len(items) > 1:
            raise invalid_param("items", "The emulator supports one item per subscription.")
        behavior = opt_str(p, "payment_behavior") or "allow_incomplete"
        if behavior not in PAYMENT_BEHAVIORS:
            raise invalid_param("payment_behavior", f"Invalid payment_behavior: {behavior}")
        trial_end = opt_int(p, "trial_end") if p.get("trial_end") != "now" else None
        days = opt_int(p, "trial_period_days")
        if trial_end is None and days:
            trial_end = self.state.clock.now + days * 86_400
        record = self.subs.create(
            customer=req_str(p, "customer"),
            price=req_str(items[0], "price"),
            quantity=opt_int(items[0], "quantity") or 1,
            trial_end=trial_end,
            payment_behavior=behavior,
            default_payment_method=payment_method_param(self.state, p, "default_payment_method"),
            metadata={k: v for k, v in (metadata_changes(p) or {}).items() if v is not None},
        )
        changes = SubscriptionChanges(
            cancel_at_period_end=opt_bool(p, "cancel_at_period_end") or None,
            cancel_at=opt_int(p, "cancel_at"),
        )
        if changes != SubscriptionChanges():
            self.subs.update(record, changes)
        return record_response(self.state, record, p)

    def get_subscription(self, req: ApiRequest) -> Response:
        """GET /v1/subscriptions/:id."""
        return record_response(self.state, self._sub(req.args[0]), req.params)

    def update_subscription(self, req: ApiRequest) -> Response:
        """POST /v1/subscriptions/:id."""
        p = req.params
        record = self._sub(req.args[0])
        items = indexed_dicts(p, "items")
        item = items[0] if items else {}
        if item.get("id") not in (None, record.data["items"]["data"][0]["id"]):
            raise no_such("subscription_item", str(item.get("id")), "items[0][id]")
        cancel_at_raw = p.get("cancel_at")
        changes = SubscriptionChanges(
            metadata=metadata_changes(p),
            cancel_at_period_end=opt_bool(p, "cancel_at_period_end"),
            cancel_at=opt_int(p, "cancel_at") if cancel_at_raw not in (None, "") else None,
            clear_cancel_at=cancel_at_raw == "",
            price=opt_str(item, "price"),
            quantity=opt_int(item, "quantity"),
            default_payment_method=(
                payment_method_param(self.state, p, "default_payment_method") or ""
                if "default_payment_method" in p
                else None
            ),
            description=opt_str(p, "description"),
            end_trial_now=p.get("trial_end") == "now",
        )
        self.subs.update(record, changes)
        return record_response(self.state, record, p)

    def cancel_subscription(self, req: ApiRequest) -> Response:
        """DELETE /v1/subscriptions/:id."""
        record = self._sub(req.args[0])
        self.subs.cancel(record)
        return record_response(self.state, record, req.params)

    def list_subscriptions(self, req: ApiRequest) -> Response:
        """GET /v1/subscriptions (status, customer, price, created, pagination)."""
        p = req.params
        status = opt_str(p, "status")
        if status is not None and status not in SUB_STATUSES:
            raise invalid_param("status", f"Invalid status: must be one of {sorted(SUB_STATUSES)}")
        customer, price = opt_str(p, "customer"), opt_str(p, "price")
        price_pred = None
        if price is not None:
            price_pred = lambda r: r.data["items"]["data"][0]["price"]["id"] == price  # noqa: E731
        return list_response(
            self.state,
            self.state.subscriptions,
            p,
            "subscription",
            predicate=_all(status_predicate(status), price_pred),
            index=None if customer is None else ("customer", customer),
        )

    def list_invoices(self, req: ApiRequest) -> Response:
        """GET /v1/invoices (status, subscription, customer, created, pagination)."""
        p = req.params
        status = opt_str(p, "status")
        if status is not None and status not in INVOICE_STATUSES:
            raise invalid_param("status", f"Invalid status: {status}")
        customer, subscription = opt_str(p, "customer"), opt_str(p, "subscription")
        index = None
        predicates: list[Callable[[Record], bool] | None] = []
        if status is not None:
            predicates.append(lambda r: r.data["status"] == status)
        if subscription is not None:
            index = ("subscription", subscription)
            if customer is not None:
                predicates.append(lambda r: r.data["customer"] == customer)
        elif customer is not None:
            index = ("customer", customer)
        return list_response(
            self.state, self.state.invoices, p, "invoice", predicate=_all(*predicates), index=index
        )

    def get_invoice(self, req: ApiRequest) -> Response:
        """GET /v1/invoices/:id."""
        return record_response(self.state, self._invoice(req.args[0]), req.params)

    def pay_invoice(self, req: ApiRequest) -> Response:
        """POST /v1/invoices/:id/pay: 402 card_error on decline."""
        p = req.params
        record = self._invoice(req.args[0])
        self.billing.pay(
            record,
            payment_method=opt_str(p, "payment_method"),
            out_of_band=bool(opt_bool(p, "paid_out_of_band")),
        )
        return record_response(self.state, record, p)

    def finalize_invoice(self, req: ApiRequest) -> Response:
        """POST /v1/invoices/:id/finalize."""
        record = self._invoice(req.args[0])
        if record.data["status"] != "draft":
            raise ApiError(400, "This invoice is already finalized.", code="invoice_not_editable")
        self.billing.finalize(record)
        return record_response(self.state, record, req.params)

    def void_invoice(self, req: ApiRequest) -> Response:
        """POST /v1/invoices/:id/void."""
        record = self._invoice(req.args[0])
        self.billing.void(record)
        return record_response(self.state, record, req.params)

    def mark_uncollectible(self, req: ApiRequest) -> Response:
        """POST /v1/invoices/:id/mark_uncollectible."""
        record = self._invoice(req.args[0])
        self.billing.mark_uncollectible(record)
        return record_response(self.state, record, req.params)

    def _sub(self, sub_id: str) -> Record:
        record = self.state.subscriptions.get(sub_id)
        if record is None:
            raise no_such("subscription", sub_id)
        return record

    def _invoice(self, in_id: str) -> Record:
        record = self.state.invoices.get(in_id)
        if record is None:
            raise no_such("invoice", in_id)
        return record
