"""What Stripe's errors mean to us: refusals, missing objects, messages without keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import stripe

from reconcile.errors import ReconcileError, StripeRequestError, StripeUnavailableError

# Stripe echoes keys masked ("sk_test_****1234"); we drop even those from our messages.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9*]*")
_AUTH_HINT = (
    "check STRIPE_API_KEY; a restricted key needs read access to subscriptions, invoices, "
    "events, account and webhook endpoints (and write access to invoices for retry-payments)"
)


class _ResourceMissing(StripeRequestError):
    """A confirmed 404 resource_missing: `retrieve` turns it into None, listings raise it."""


class _PaymentRefused(StripeRequestError):
    """Stripe refused a POST for a reason of the object (card declined, invoice not open)."""

    def __init__(
        self, message: str, *, http_status: int, error: Mapping[str, Any],
        headers: Mapping[str, str] | None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error = error
        self.headers = headers


def _refusal(verb: str, path: str, exc: stripe.StripeError) -> ReconcileError:
    status = exc.http_status or 0
    if _is_auth(exc):
        return StripeRequestError(
            f"Stripe refused the API key for {verb} {path}: {_describe(exc)}", hint=_AUTH_HINT
        )
    if 200 <= status < 300:  # the SDK could not parse a 2xx body
        return StripeUnavailableError(f"Stripe returned a malformed body for {verb} {path}")
    error = _error(exc)
    if verb == "POST" and status in (400, 402, 404) and error.get("type") != "idempotency_error":
        return _PaymentRefused(
            f"Stripe refused {verb} {path}: {_describe(exc)}", http_status=status, error=error,
            headers=exc.headers,
        )
    if status == 404 and _error_field(exc, "code") == "resource_missing":
        return _ResourceMissing(f"Stripe has no {path}: {_describe(exc)}")
    return StripeRequestError(f"Stripe refused {verb} {path}: {_describe(exc)}")


def _is_auth(exc: stripe.StripeError) -> bool:
    auth_types = stripe.AuthenticationError | stripe.PermissionError
    return isinstance(exc, auth_types) or exc.http_status in (401, 403)


def _describe(exc: stripe.StripeError) -> str:
    if isinstance(exc, stripe.APIConnectionError):
        text = f"network error: {exc.user_message or type(exc).__name__}"
    else:
        code = _error_field(exc, "code") or _error_field(exc, "type") or "no error code"
        message = _error_field(exc, "message") or exc.user_message or "no message"
        text = f"HTTP {exc.http_status} {code}: {message}"
    if exc.request_id:
        text += f" (request {exc.request_id})"
    return _KEY_PATTERN.sub("[redacted key]", " ".join(text.split()))


def _error(exc: stripe.StripeError) -> Mapping[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _error_field(exc: stripe.StripeError, name: str) -> str | None:
    value = _error(exc).get(name)
    return value if isinstance(value, str) else None
