"""An in-memory Stripe source for engine tests: pages of plain JSON, no HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconcile.errors import StripeUnavailableError


@dataclass(frozen=True)
class FakePage:
    """A page as the gateway yields it."""

    objects: tuple[Mapping[str, Any], ...]
    observed_at: datetime


@dataclass(frozen=True)
class FakeRetrieved:
    """A retrieved object."""

    object: Mapping[str, Any]
    observed_at: datetime


@dataclass(frozen=True)
class FakeAccount:
    """The account a key belongs to."""

    id: str
    livemode: bool


@dataclass
class FakeStats:
    """Request counters like the real gateway's."""

    requests: int = 0
    rate_limited: int = 0


@dataclass
class FakeStripe:
    """Subscriptions and invoices by id; `fail_after_pages` breaks a listing midway."""

    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    account_id: str = "acct_test1"
    livemode: bool = False
    page_size: int = 2
    fail_after_pages: int | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    stats: FakeStats = field(default_factory=FakeStats)
    retrieved: list[str] = field(default_factory=list)

    def add_subscription(self, payload: dict[str, Any]) -> None:
        """Put a subscription in 'Stripe'."""
        self.subscriptions[payload["id"]] = payload

    def add_invoice(self, payload: dict[str, Any]) -> None:
        """Put an invoice in 'Stripe'."""
        self.invoices[payload["id"]] = payload

    def tick(self, seconds: int = 1) -> None:
        """Advance Stripe's clock, so later observations are fresher."""
        self.now += timedelta(seconds=seconds)

    def account(self) -> FakeAccount:
        """The key's account."""
        self.stats.requests += 1
        return FakeAccount(self.account_id, self.livemode)

    def _pages(self, objects: list[dict[str, Any]]) -> Iterator[FakePage]:
        for n, start in enumerate(range(0, max(len(objects), 1), self.page_size)):
            if self.fail_after_pages is not None and n >= self.fail_after_pages:
                raise StripeUnavailableError("listing failed: simulated 500s exhausted retries")
            self.stats.requests += 1
            yield FakePage(tuple(objects[start : start + self.page_size]), self.now)

    def list_subscriptions(self) -> Iterator[FakePage]:
        """Every subscription, newest first."""
        return self._pages(sorted(self.subscriptions.values(), key=lambda s: -s["created"]))

    def list_invoices(self, *, lookback_days: int, now: datetime) -> Iterator[FakePage]:
        """Every invoice (the fake has no lookback window)."""
        return self._pages(sorted(self.invoices.values(), key=lambda s: -s["created"]))

    def _retrieve(self, store: dict[str, dict[str, Any]], key: str) -> FakeRetrieved | None:
        self.stats.requests += 1
        self.retrieved.append(key)
        found = store.get(key)
        return None if found is None else FakeRetrieved(found, self.now)

    def retrieve_subscription(self, subscription_id: str) -> FakeRetrieved | None:
        """One subscription, or None for a 404."""
        return self._retrieve(self.subscriptions, subscription_id)

    def retrieve_invoice(self, invoice_id: str) -> FakeRetrieved | None:
        """One invoice, or None for a 404."""
        return self._retrieve(self.invoices, invoice_id)
