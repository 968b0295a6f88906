"""The configured `StripeClient`: on `requests`, with stripe's own logging quietened."""

from __future__ import annotations

import logging

import stripe
from stripe import _util as stripe_util

from reconcile.errors import ConfigError
from reconcile.stripe_wire import key_livemode

# (connect, read) seconds: a dead host should fail fast and be retried, a big page may be slow.
_TIMEOUT = (10.0, 80.0)


def make_client(api_key: str, api_base: str, max_network_retries: int) -> stripe.StripeClient:
    """A client on `requests` (so tests can intercept it) with stripe's logging quietened."""
    key_livemode(api_key)
    if max_network_retries < 0:
        raise ConfigError(["max_network_retries must be >= 0"])
    _quiet_stripe_logging()
    return stripe.StripeClient(
        api_key,
        # The SDK concatenates base + path, so a trailing slash would yield "//v1/...".
        base_addresses={"api": api_base.rstrip("/")},
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=_TIMEOUT),
    )


def _quiet_stripe_logging() -> None:
    # At debug level stripe logs query strings and whole response bodies (customer emails,
    # addresses). The `stripe` logger gets WARNING so a DEBUG root cannot enable it. STRIPE_LOG
    # (read once at import) and `stripe.log` make stripe *print* to stderr, bypassing logging,
    # so both are cleared; this is process-wide, idempotent, and the only way to stop the print.
    logger = logging.getLogger("stripe")
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    stripe.log = None
    stripe_util.STRIPE_LOG = None
