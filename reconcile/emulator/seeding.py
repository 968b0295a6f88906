"""Bulk seeding: many customers, each with a subscription and its recent invoices.

Objects are built as dicts and bulk-inserted (no HTTP, no per-object events) so that
100,000 subscriptions take seconds.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from .clock import DAY
from .seed_config import Period, SeedOptions, SeedReport, recent_periods
from .state import State
from .store import Record

Json = dict[str, Any]

_TRIAL = 14 * DAY
_YEAR = 365 * DAY


class _Seeder:
    def __init__(self, state: State, options: SeedOptions) -> None:
        self.st = state
        self.opt = options
        self.rng = random.Random(options.rng_seed)
        self.now = state.clock.now
        self.customers: list[Record] = []
        self.subs: list[Record] = []
        self.invoices: list[Record] = []
        self.tasks: list[tuple[int, str, str]] = []
        self.prices = self._catalog()

    def _catalog(self) -> list[tuple[Json, Json]]:
        st, created = self.st, self.now - 400 * DAY
        prod_id = st.ids.new("prod")
        product = st.catalog.product(prod_id, created, name="Seeded plan", metadata={})
        st.products.add(Record(prod_id, created, product))
        out = []
        # Month and year only: `_periods` relies on calendar arithmetic.
        for amount, interval in ((900, "month"), (2900, "month"), (9900, "month"), (29000, "year")):
            price_id = st.ids.new("price")
            price = st.catalog.price(
                price_id,
                created,
                product=prod_id,
                unit_amount=amount,
                currency="usd",
                interval=interval,
                interval_count=1,
                nickname=f"{interval}ly {amount}",
                lookup_key=None,
                metadata={},
            )
            st.prices.add(Record(price_id, created, price))
            out.append((price, st.catalog.plan(price)))
        return out

    def run(self, n: int) -> dict[str, int]:
        names = list(self.opt.mix)
        statuses = self.rng.choices(names, weights=[self.opt.mix[k] for k in names], k=n)
        # Monthly prices dominate, as in most subscription businesses.
        self.price_picks = self.rng.choices(range(len(self.prices)), weights=(5, 3, 1, 1), k=n)
        counts: dict[str, int] = {}
        for i, status in enumerate(statuses):
            self._one(i, status)
            counts[status] = counts.get(status, 0) + 1
        return counts

    def _created_for(self, status: str) -> int:
        rng, now = self.rng, self.now
        if status == "trialing":
            return now - rng.randint(0, _TRIAL - DAY)
        if status == "incomplete":
            return now - rng.randint(60, 22 * 3600)
        if status == "paused":
            return now - rng.randint(_TRIAL + DAY, 90 * DAY)
        return now - rng.randint(2 * DAY, _YEAR)

    def _one(self, i: int, status: str) -> None:
        st, rng, now = self.st, self.rng, self.now
        created = self._created_for(status)
        price, plan = self.prices[self.price_picks[i]]
        interval = price["recurring"]["interval"]
        good = status in ("active", "trialing", "canceled")
        pm = "pm_card_visa" if good else (None if status == "paused" else "pm_card_chargeDeclined")
        cus_id, sub_id = st.ids.new("cus"), st.ids.new("sub")
        customer = st.catalog.customer(
            cus_id,
            created - rng.randint(0, 3600),
            email=f"customer{i}@example.com",
            name=f"Customer {i}",
            description=None,
            metadata={},
            payment_method=pm,
        )
        trial = (created, created + _TRIAL) if status in ("trialing", "paused") else None
        until = now
        if status == "canceled":
            until = rng.randint(created + 3600, now)
        elif status in ("incomplete", "incomplete_expired"):
            until = created  # never renewed: the first period is the only one
        keep = max(1, self.opt.invoices_per_subscription)
        periods = (
            [(0, *trial, trial[0])] if trial else recent_periods(created, interval, until, keep)
        )
        item = st.shapes.item(
            st.ids.new("si"),
            created,
            sub_id=sub_id,
            price=price,
            plan=plan,
            quantity=1,
            period=periods[-1][1:3],
        )
        sub = st.shapes.subscription(
            sub_id,
            created,
            customer=cus_id,
            item=item,
            status=status,
            anchor=trial[1] if trial else created,
            trial=trial,
            default_payment_method=None,
            metadata={},
        )
        invoices = self._invoices(customer, sub, periods, status, trial is not None)
        sub["latest_invoice"] = invoices[-1].id
        customer["currency"] = "usd"
        customer["next_invoice_sequence"] = len(invoices) + 1
        last = invoices[-1].data["status"]
        self._finish_sub(sub, status, until, periods[-1][1:3], last)
        self.customers.append(Record(cus_id, customer["created"], customer))
        self.subs.append(Record(sub_id, created, sub))
        self.invoices.extend(invoices)

    def _finish_sub(
        self, sub: Json, status: str, until: int, period: tuple[int, int], last_invoice: str
    ) -> None:
        st, rng, now = self.st, self.rng, self.now
        if status in ("active", "past_due", "trialing"):
            self.tasks.append((period[1], "renew", sub["id"]))
        if status == "active" and rng.random() < self.opt.cancel_at_period_end_rate:
            sub.update(
                cancel_at_period_end=True,
                cancel_at=period[1],
                canceled_at=rng.randint(period[0], now),
                cancellation_details=st.shapes.cancellation("cancellation_requested"),
            )
        elif status == "canceled":
            reason = "payment_failed" if last_invoice == "open" else "cancellation_requested"
            sub.update(
                canceled_at=until,
                ended_at=until,
                cancellation_details=st.shapes.cancellation(reason),
            )
        elif status == "incomplete_expired":
            sub["ended_at"] = sub["created"] + int(st.policy.incomplete_expiry.total_seconds())
        elif status == "incomplete":
            expiry = sub["created"] + int(st.policy.incomplete_expiry.total_seconds())
            self.tasks.append((expiry, "expire", sub["id"]))

    def _invoices(
        self, customer: Json, sub: Json, periods: list[Period], status: str, trial: bool
    ) -> list[Record]:
        st, out = self.st, []
        amount = 0 if trial else sub["items"]["data"][0]["price"]["unit_amount"]
        for index, start, end, prev_start in periods:
            reason = "subscription_create" if index == 0 else "subscription_cycle"
            in_id = st.ids.new("in")
            data = st.shapes.invoice(
                in_id,
                start,
                customer=customer,
                sub=sub,
                line_id=st.ids.new("il"),
                billing_reason=reason,
                # Like Stripe, a cycle invoice's own period is the one just ended.
                period=(start, start) if index == 0 else (prev_start, start),
                line_period=(start, end),
                amount=amount,
            )
            last = index == periods[-1][0]
            self._settle(data, status if last else "active", index + 1, customer["invoice_prefix"])
            out.append(Record(in_id, start, data))
        return out

    def _settle(self, inv: Json, status: str, seq: int, prefix: str) -> None:
        """Move a draft invoice to the state its subscription's status implies."""
        rng, created, now = self.rng, inv["created"], self.now
        transitions = {
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        }
        inv.update(
            number=f"{prefix}-{seq:04d}",
            effective_at=created,
            ending_balance=0,
            status_transitions=transitions,
            attempted=True,
            attempt_count=1,
            status="open",
            auto_advance=True,
        )
        failed = status in ("past_due", "unpaid", "incomplete", "incomplete_expired") or (
            status == "canceled" and rng.random() < 0.3
        )
        if not failed:
            inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0)
            transitions["paid_at"] = created
        elif status == "past_due":
            attempts = rng.randint(1, len(self.st.policy.retry_delays))
            retry = now + rng.randint(3600, 3 * DAY)
            inv.update(attempt_count=attempts, next_payment_attempt=retry)
            self.tasks.append((retry, "retry", inv["id"]))
        elif status == "unpaid":
            inv.update(
                attempt_count=self.st.policy.max_attempts,
                status="uncollectible",
                auto_advance=False,
            )
            transitions["marked_uncollectible_at"] = min(now, created + 15 * DAY)
        elif status == "incomplete_expired":
            inv.update(status="void", auto_advance=False)
            transitions["voided_at"] = created + int(
                self.st.policy.incomplete_expiry.total_seconds()
            )


def seed(state: State, n_customers: int, options: SeedOptions) -> SeedReport:
    """Create `n_customers` customers with one subscription each; see `SeedOptions`."""
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    # Hundreds of thousands of new dicts would trigger repeated full collections that
    # traverse everything built so far (quadratic); nothing here creates cycles.
    gc.disable()
    try:
        seeder = _Seeder(state, options)
        counts = seeder.run(n_customers)
        state.customers.bulk_add(seeder.customers)
        state.subscriptions.bulk_add(seeder.subs)
        state.invoices.bulk_add(seeder.invoices)
        state.schedule.push_many(seeder.tasks)
        if options.freeze_gc:
            # Seeded objects live as long as the emulator; freezing moves them out of the
            # collector's reach so later full collections do not walk millions of objects
            # (about 3 s each at 100k subscriptions).
            gc.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()
    events = 0
    if options.emit_events:
        cutoff = state.clock.now - state.retention
        for kind, records in (
            ("customer.created", seeder.customers),
            ("customer.subscription.created", seeder.subs),
            ("invoice.created", seeder.invoices),
        ):
            for record in records:
                if record.created >= cutoff:
                    state.emit(kind, record.data, created=record.created)
                    events += 1
    return SeedReport(
        customers=n_customers,
        subscriptions=len(seeder.subs),
        invoices=len(seeder.invoices),
        events=events,
        by_status=counts,
        seconds=time.perf_counter() - started,
    )
