"""The only package that imports `stripe`: client, listings, retrieves, payments, error meaning.

Objects leave as plain JSON mappings (typed SDK objects are ~20x slower to build) in frozen
values stamped with Stripe's own clock (the `Date` header), so staleness compares like with like.
Wire details that need no SDK live in `reconcile.stripe_wire`.

Retry layering: this gateway's loop is the *only* retry layer. Every request passes
`max_network_retries=0`, whatever the client was built with, because SDK retries would multiply
with ours (max_attempts x (1 + N) requests), hide attempts from `stats`, sleep on the real clock
and skip 429s lacking `Stripe-Should-Retry`. `make_client` still applies the configured value
to the client for any SDK call made outside the gateway; wire the setting into the gateway as
`max_attempts = max_network_retries + 1`.

POSTs always carry the caller's idempotency key, so a retry can never act twice: Stripe either
never saw the request (network error, 429, 409 key in use) or replays its stored answer.
"""

from __future__ import annotations

from reconcile.stripe_api.client import make_client
from reconcile.stripe_api.gateway import PINNED_API_VERSION, StripeGateway
from reconcile.stripe_wire import (
    AccountProbe,
    Page,
    PayOutcome,
    RequestStats,
    Retrieved,
    StripeAccount,
    WebhookEndpoint,
    key_livemode,
)

__all__ = [
    "PINNED_API_VERSION", "AccountProbe", "Page", "PayOutcome", "RequestStats", "Retrieved",
    "StripeAccount", "StripeGateway", "WebhookEndpoint", "key_livemode", "make_client",
]
