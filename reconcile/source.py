"""What the engine needs from Stripe, as a Protocol, so the engine never imports `stripe`.

`reconcile.stripe_api.StripeGateway` implements it; tests and benchmarks may pass fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol


class PageLike(Protocol):
    """One page of a listing: plain JSON objects and when Stripe served them."""

    @property
    def objects(self) -> tuple[Mapping[str, Any], ...]: ...
    @property
    def observed_at(self) -> datetime: ...


class RetrievedLike(Protocol):
    """One object fetched by id."""

    @property
    def object(self) -> Mapping[str, Any]: ...
    @property
    def observed_at(self) -> datetime: ...


class AccountLike(Protocol):
    """The account a key belongs to."""

    @property
    def id(self) -> str: ...
    @property
    def livemode(self) -> bool: ...


class StatsLike(Protocol):
    """Request counters."""

    requests: int
    rate_limited: int


class StripeSource(Protocol):
    """The reads a reconciliation makes."""

    @property
    def stats(self) -> StatsLike: ...
    def account(self) -> AccountLike: ...
    def list_subscriptions(self) -> Iterator[PageLike]: ...
    def list_invoices(self, *, lookback_days: int, now: datetime) -> Iterator[PageLike]: ...
    def retrieve_subscription(self, subscription_id: str) -> RetrievedLike | None: ...
    def retrieve_invoice(self, invoice_id: str) -> RetrievedLike | None: ...
