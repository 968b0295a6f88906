"""Stripe's wire format without the SDK: values, headers, dates, ids, list bodies, outcomes.

Split from `stripe_api` (the only module that imports `stripe`) so that module stays about
the client and the retry policy; everything here is pure and takes plain JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from reconcile.errors import ConfigError, StripeRequestError, StripeUnavailableError

# A pathological Retry-After must not stall a run for hours; the retry still counts an attempt.
RETRY_AFTER_CEILING = 60.0
_ID_PATTERN = re.compile(r"[A-Za-z0-9_]+")
_PATH_PATTERN = re.compile(r"/v1/[A-Za-z0-9_/]+")

_KEY_PREFIXES = (("sk_live_", True), ("rk_live_", True), ("sk_test_", False), ("rk_test_", False))
PayStatus = Literal["succeeded", "processing", "declined", "requires_action", "failed"]
# Card errors that mean "the customer must authenticate", not "the bank said no".
_ACTION_CODES = frozenset({"authentication_required", "invoice_payment_intent_requires_action"})


@dataclass(frozen=True, slots=True)
class Page:
    objects: tuple[Mapping[str, Any], ...]
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Retrieved:
    object: Mapping[str, Any]
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class StripeAccount:
    id: str
    livemode: bool


@dataclass(frozen=True, slots=True)
class AccountProbe:
    """The key's account plus Stripe's `Date` and our clock around the request (clock skew)."""

    account: StripeAccount
    stripe_date: datetime | None
    sent_at: datetime
    received_at: datetime


@dataclass
class RequestStats:
    """Counters, mutable on purpose: the gateway bumps them as it goes."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class PayOutcome:
    """What `POST /v1/invoices/:id/pay` did. A decline is an outcome, not an exception.

    `invoice` is the invoice Stripe returned (only on a 2xx); `replayed` says Stripe answered
    from its idempotency cache (the same key was sent before), so nothing was charged anew.
    """

    status: PayStatus
    observed_at: datetime
    invoice: Mapping[str, Any] | None = None
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A webhook endpoint as registered in Stripe (for `reconcile doctor`)."""

    id: str
    url: str
    status: str
    enabled_events: tuple[str, ...]
    api_version: str | None
    livemode: bool


def key_livemode(api_key: str) -> bool:
    """True for live keys, False for test keys; anything else cannot read our resources."""
    for prefix, live in _KEY_PREFIXES:
        if api_key.startswith(prefix):
            return live
    # Never echo the key: even its tail would help someone guess which key leaked.
    raise ConfigError(["STRIPE_API_KEY must start with sk_live_, sk_test_, rk_live_ or rk_test_"])


def pay_outcome_from_error(
    http_status: int, error: Mapping[str, Any], observed_at: datetime, *, replayed: bool
) -> PayOutcome:
    """Classify a refused payment: declined, needs the customer's action, or failed."""
    code = _text(error.get("code"))
    decline_code = _text(error.get("decline_code"))
    status: PayStatus = "failed"
    if code in _ACTION_CODES or decline_code in _ACTION_CODES:
        status = "requires_action"
    elif http_status == 402 or error.get("type") == "card_error":
        status = "declined"
    return PayOutcome(
        status=status, observed_at=observed_at, code=code, decline_code=decline_code,
        message=_text(error.get("message")), replayed=replayed,
    )


def pay_outcome_from_invoice(
    invoice: Mapping[str, Any], observed_at: datetime, *, replayed: bool
) -> PayOutcome:
    """A 2xx answer: paid, or still open while an asynchronous payment method settles."""
    status: PayStatus = "succeeded" if invoice.get("status") == "paid" else "processing"
    return PayOutcome(status=status, observed_at=observed_at, invoice=invoice, replayed=replayed)


def webhook_endpoint_from_payload(payload: Mapping[str, Any]) -> WebhookEndpoint:
    """Normalise a webhook_endpoint object; malformed ones are Stripe's fault, not ours."""
    events = payload.get("enabled_events")
    if not isinstance(payload.get("id"), str) or not isinstance(events, list):
        raise StripeUnavailableError("Stripe returned a malformed webhook endpoint")
    return WebhookEndpoint(
        id=payload["id"],
        url=str(payload.get("url") or ""),
        status=str(payload.get("status") or ""),
        enabled_events=tuple(str(e) for e in events),
        api_version=_text(payload.get("api_version")),
        livemode=bool(payload.get("livemode") or False),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def list_body(path: str, data: object) -> tuple[tuple[Mapping[str, Any], ...], bool]:
    """The objects and `has_more` of a list response; anything else is malformed."""
    if (
        isinstance(data, Mapping)
        and data.get("object") == "list"
        and isinstance(data.get("data"), list)
        and isinstance(data.get("has_more"), bool)
    ):
        objects = tuple(data["data"])
        has_more: bool = data["has_more"]
        if all(isinstance(o, Mapping) for o in objects) and (
            not has_more or (objects and isinstance(objects[-1].get("id"), str))
        ):
            return objects, has_more
    raise StripeUnavailableError(f"Stripe returned a malformed list for GET {path}")


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header by case-insensitive name (requests' dict is; other clients' may not be)."""
    wanted = name.lower()
    return next((v for k, v in (headers or {}).items() if k.lower() == wanted), None)


def http_date(value: str | None) -> datetime | None:
    """An HTTP date as aware UTC; None when absent or unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # "-0000" parses naive; HTTP dates are GMT by definition.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def retry_after(headers: Mapping[str, str] | None, now: datetime) -> float:
    """Seconds Stripe asked us to wait (seconds or an HTTP date), capped; 0 when absent."""
    raw = header(headers, "Retry-After")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        when = http_date(raw)
        seconds = (when - now).total_seconds() if when else 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING) if math.isfinite(seconds) else 0.0


def timestamp(moment: datetime) -> int:
    """Epoch seconds for a query parameter; naive datetimes are a caller bug."""
    if moment.tzinfo is None:
        raise ValueError("datetimes sent to Stripe must be timezone-aware")
    return int(moment.timestamp())


def check_path(path: str) -> None:
    """Only Stripe v1 paths of plain segments may be requested."""
    if not _PATH_PATTERN.fullmatch(path):
        raise ValueError(f"not a Stripe v1 path: {path!r}")


def check_id(object_id: str) -> str:
    """An object id safe to put in a path."""
    # Ids may come from webhook bodies or operators; never let one reshape the request path.
    if not _ID_PATTERN.fullmatch(object_id):
        raise StripeRequestError(f"not a Stripe object id: {object_id[:80]!r}")
    return object_id
