"""Invoices: creation, finalization, payment attempts and retries, and their effects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ApiError, card_declined, invalid_param
from .render import invoice_subscription
from .shapes import TEST_CARDS, TestCard
from .state import State
from .store import Record

Json = dict[str, Any]

# Statuses in which a subscription is still billed and its invoices still matter.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid", "incomplete", "paused"})


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """The result of charging an invoice's amount to a payment method."""

    ok: bool
    payment_method: str | None
    card: TestCard | None
    charge_id: str


class Billing:
    """The invoice half of the billing engine."""

    def __init__(self, state: State) -> None:
        self.state = state

    def new_invoice(
        self,
        sub: Json,
        *,
        reason: str,
        period: tuple[int, int],
        line_period: tuple[int, int],
        amount: int,
    ) -> Record:
        """Store a draft invoice for `sub` without announcing it yet."""
        st = self.state
        customer = st.customers.get(sub["customer"])
        if customer is None:
            raise invalid_param("customer", f"No such customer: '{sub['customer']}'")
        in_id = st.ids.new("in")
        data = st.shapes.invoice(
            in_id,
            st.clock.now,
            customer=customer.data,
            sub=sub,
            line_id=st.ids.new("il"),
            billing_reason=reason,
            period=period,
            line_period=line_period,
            amount=amount,
        )
        return st.invoices.add(Record(in_id, st.clock.now, data))

    def finalize(self, invoice: Record) -> None:
        """Draft -> open, numbered from the customer's sequence; emits invoice.finalized."""
        st, now = self.state, self.state.clock.now
        number = None
        customer = st.customers.get(invoice.data["customer"])
        if customer is not None:
            seq = customer.data["next_invoice_sequence"]
            number = f"{customer.data['invoice_prefix']}-{seq:04d}"
            # Stripe does not emit customer.updated for the sequence bump; neither do we.
            st.replace(st.customers, customer, {"next_invoice_sequence": seq + 1})
        transitions = {**invoice.data["status_transitions"], "finalized_at": now}
        url = f"https://invoice.stripe.com/i/emulated/{invoice.id}"
        _, new = st.replace(
            st.invoices,
            invoice,
            {
                "status": "open",
                "number": number,
                "effective_at": now,
                "ending_balance": 0,
                "hosted_invoice_url": url,
                "invoice_pdf": f"{url}/pdf",
                "status_transitions": transitions,
            },
        )
        st.emit("invoice.finalized", new)

    def charge(self, invoice: Record, payment_method: str | None) -> ChargeOutcome:
        """Decide how charging the invoice ends, from the test card it would use."""
        pm = payment_method or self.payment_method_for(invoice.data)
        card = None if pm is None else TEST_CARDS.get(pm)
        ok = invoice.data["amount_due"] == 0 or (card is not None and card.decline_code is None)
        return ChargeOutcome(ok, pm, card, self.state.ids.new("ch"))

    def payment_method_for(self, invoice: Json) -> str | None:
        """Invoice, then subscription, then customer default payment method, like Stripe."""
        st = self.state
        if invoice["default_payment_method"]:
            return str(invoice["default_payment_method"])
        sub_id = invoice_subscription(invoice)
        sub = None if sub_id is None else st.subscriptions.get(sub_id)
        if sub is not None and sub.data["default_payment_method"]:
            return str(sub.data["default_payment_method"])
        customer = st.customers.get(invoice["customer"])
        if customer is None:
            return None
        pm = customer.data["invoice_settings"]["default_payment_method"]
        return None if pm is None else str(pm)

    def attempt(
        self, invoice: Record, *, automatic: bool, payment_method: str | None = None
    ) -> ChargeOutcome:
        """Try to collect the invoice and record the outcome (events, retries, statuses)."""
        outcome = self.charge(invoice, payment_method)
        if outcome.ok:
            self.record_paid(invoice, attempted=True)
        else:
            self.record_failure(invoice, automatic=automatic)
        return outcome

    def record_paid(self, invoice: Record, *, attempted: bool) -> None:
        """Mark the invoice paid; emits invoice.paid and invoice.payment_succeeded."""
        st, data = self.state, invoice.data
        _, new = st.replace(
            st.invoices,
            invoice,
            {
                "status": "paid",
                "amount_paid": data["amount_due"],
                "amount_remaining": 0,
                "attempted": data["attempted"] or attempted,
                "attempt_count": data["attempt_count"] + (1 if attempted else 0),
                "next_payment_attempt": None,
                "status_transitions": {**data["status_transitions"], "paid_at": st.clock.now},
            },
        )
        st.emit("invoice.paid", new)
        st.emit("invoice.payment_succeeded", new)
        sub = self._latest_for(new)
        if sub is not None and sub.data["status"] in ("past_due", "unpaid", "incomplete"):
            self.set_sub_status(sub, "active")

    def record_failure(self, invoice: Record, *, automatic: bool) -> None:
        """Count a failed attempt; schedule the next retry or apply the final action."""
        st, data = self.state, invoice.data
        attempts = data["attempt_count"] + 1
        delays = st.policy.retry_delays
        next_attempt = data["next_payment_attempt"]
        retryable = data["billing_reason"] != "subscription_create"
        if automatic:
            # The first invoice of a subscription is never retried: it expires with it.
            more = retryable and attempts <= len(delays)
            next_attempt = (
                st.clock.now + int(delays[attempts - 1].total_seconds()) if more else None
            )
        _, new = st.replace(
            st.invoices,
            invoice,
            {"attempt_count": attempts, "attempted": True, "next_payment_attempt": next_attempt},
        )
        st.emit("invoice.payment_failed", new)
        if automatic and next_attempt is not None:
            st.schedule.push(next_attempt, "retry", invoice.id)
        sub = self._latest_for(new)
        if sub is None:
            return
        if sub.data["status"] in ("active", "trialing"):
            self.set_sub_status(sub, "past_due")
        if automatic and retryable and next_attempt is None:
            self._retries_exhausted(invoice, sub)

    def _retries_exhausted(self, invoice: Record, sub: Record) -> None:
        if self.state.policy.final_action == "unpaid":
            self.set_sub_status(sub, "unpaid")
            self.mark_uncollectible(invoice)
        else:
            self.end_subscription(sub, at=self.state.clock.now, reason="payment_failed")

    def run_retry(self, invoice_id: str, due: int) -> None:
        """A scheduled retry; ignored if the invoice moved on since it was scheduled."""
        invoice = self.state.invoices.get(invoice_id)
        if invoice is None or invoice.data["status"] != "open":
            return
        if invoice.data["next_payment_attempt"] != due:
            return
        self.attempt(invoice, automatic=True)

    def pay(self, invoice: Record, *, payment_method: str | None, out_of_band: bool) -> None:
        """`POST /v1/invoices/:id/pay`: raises a 402 card error when the charge is declined."""
        status = invoice.data["status"]
        if status == "paid":
            raise ApiError(400, "Invoice is already paid.", code="invoice_already_paid")
        if status == "void":
            raise ApiError(
                400, "This invoice has been voided and cannot be paid.", code="invoice_not_payable"
            )
        if payment_method is not None and payment_method not in self.state.payment_methods:
            raise ApiError(
                404,
                f"No such PaymentMethod: '{payment_method}'",
                code="resource_missing",
                param="payment_method",
            )
        if status == "draft":
            self.finalize(invoice)
        if out_of_band:
            self.record_paid(invoice, attempted=False)
            return
        outcome = self.attempt(invoice, automatic=False, payment_method=payment_method)
        if outcome.ok:
            return
        if outcome.card is None:
            raise ApiError(
                400,
                "This customer has no attached payment source or default payment method.",
                code="invoice_no_payment_method",
                param="payment_method",
            )
        raise card_declined(
            code=outcome.card.error_code,
            decline_code=outcome.card.decline_code or "generic_decline",
            message=outcome.card.message,
            charge=outcome.charge_id,
            payment_method=outcome.card.id,
        )

    def void(self, invoice: Record) -> None:
        """Open -> void; emits invoice.voided."""
        self._close(invoice, "void", "voided_at", "invoice.voided")

    def mark_uncollectible(self, invoice: Record) -> None:
        """Open -> uncollectible; emits invoice.marked_uncollectible."""
        self._close(
            invoice, "uncollectible", "marked_uncollectible_at", "invoice.marked_uncollectible"
        )

    def _close(self, invoice: Record, status: str, stamp: str, event_type: str) -> None:
        st, data = self.state, invoice.data
        if data["status"] not in ("open", "uncollectible") or data["status"] == status:
            raise ApiError(
                400,
                f"You can only {status} an open invoice (it is {data['status']}).",
                code="invoice_not_editable",
            )
        _, new = st.replace(
            st.invoices,
            invoice,
            {
                "status": status,
                "next_payment_attempt": None,
                "status_transitions": {**data["status_transitions"], stamp: st.clock.now},
            },
        )
        st.emit(event_type, new)

    def set_sub_status(self, sub: Record, status: str, **extra: Any) -> None:
        """Change a subscription's status (and more); emits customer.subscription.updated."""
        st = self.state
        old, new = st.replace(st.subscriptions, sub, {"status": status, **extra})
        st.emit_update("customer.subscription.updated", old, new)

    def end_subscription(self, sub: Record, *, at: int, reason: str) -> None:
        """Cancel for good; emits customer.subscription.deleted."""
        st, data = self.state, sub.data
        _, new = st.replace(
            st.subscriptions,
            sub,
            {
                "status": "canceled",
                "ended_at": at,
                "canceled_at": data["canceled_at"] or at,
                "cancellation_details": st.shapes.cancellation(
                    data["cancellation_details"]["reason"] or reason
                ),
            },
        )
        st.emit("customer.subscription.deleted", new)

    def _latest_for(self, invoice: Json) -> Record | None:
        """The invoice's subscription, if this invoice is its latest one."""
        sub_id = invoice_subscription(invoice)
        sub = None if sub_id is None else self.state.subscriptions.get(sub_id)
        if sub is None or sub.data["latest_invoice"] != invoice["id"]:
            return None
        return sub
