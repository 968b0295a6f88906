"""The only module that imports `stripe`: client, listings, retrieves, and what errors mean.

Objects leave as plain JSON mappings (typed SDK objects are ~20x slower to build) in frozen
values stamped with Stripe's own clock (the `Date` header), so staleness compares like with like.

Retry layering: this gateway's loop is the *only* retry layer. Every GET passes
`max_network_retries=0`, whatever the client was built with, because SDK retries would multiply
with ours (max_attempts x (1 + N) requests), hide attempts from `stats`, sleep on the real clock
and skip 429s lacking `Stripe-Should-Retry`. `make_client` still applies the configured value
to the client for any SDK call made outside the gateway; wire the setting into the gateway as
`max_attempts = max_network_retries + 1`.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import stripe
from stripe import _util as stripe_util
from stripe._request_options import RequestOptions

from reconcile.errors import ConfigError, ReconcileError, StripeRequestError, StripeUnavailableError

_PAGE_LIMIT = 100
_MAX_EVENT_TYPES = 20  # Stripe rejects more than 20 `types` per events request
# (connect, read) seconds: a dead host should fail fast and be retried, a big page may be slow.
_TIMEOUT = (10.0, 80.0)
# A pathological Retry-After must not stall a run for hours; the retry still counts an attempt.
_RETRY_AFTER_CEILING = 60.0
# Keys `raw_request` takes as request options (or routing), not as query parameters.
_RESERVED_PARAMS = RequestOptions.__optional_keys__ | {"base", "usage"}
_KEY_PREFIXES = (("sk_live_", True), ("rk_live_", True), ("sk_test_", False), ("rk_test_", False))
# Stripe echoes keys masked ("sk_test_****1234"); we drop even those from our messages.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9*]*")
_ID_PATTERN = re.compile(r"[A-Za-z0-9_]+")
_PATH_PATTERN = re.compile(r"/v1/[A-Za-z0-9_/]+")
_AUTH_HINT = (
    "check STRIPE_API_KEY; a restricted key needs read access to subscriptions, invoices, "
    "events and account"
)


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


@dataclass
class RequestStats:
    """Counters, mutable on purpose: the gateway bumps them as it goes."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0


class _ResourceMissing(StripeRequestError):
    """A confirmed 404 resource_missing: `retrieve` turns it into None, listings raise it."""


def key_livemode(api_key: str) -> bool:
    """True for live keys, False for test keys; anything else cannot read our resources."""
    for prefix, live in _KEY_PREFIXES:
        if api_key.startswith(prefix):
            return live
    # Never echo the key: even its tail would help someone guess which key leaked.
    raise ConfigError(["STRIPE_API_KEY must start with sk_live_, sk_test_, rk_live_ or rk_test_"])


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


class StripeGateway:
    """Read-only access to Stripe with our retry policy; see the module docstring."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        api_key_livemode: bool,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_attempts < 1 or backoff_base < 0 or backoff_cap < 0:
            raise ValueError("max_attempts must be >= 1 and backoff values >= 0")
        self._client = client
        self._livemode = api_key_livemode
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock  # only when a response lacks a usable Date header
        self.stats = RequestStats()

    def list_pages(self, path: str, params: Mapping[str, str | int]) -> Iterator[Page]:
        _check_path(path)
        if reserved := _RESERVED_PARAMS.intersection(params):
            raise ValueError(f"reserved parameter(s) {sorted(reserved)} for {path}")
        query: dict[str, str | int] = {"limit": _PAGE_LIMIT, **params}
        used_cursors: set[str] = set()
        while True:
            response = self._send(path, query)
            objects, has_more = _list_body(path, response.data)
            yield Page(objects=objects, observed_at=self._observed_at(response))
            if not has_more:
                return
            cursor = objects[-1]["id"]
            # Only the cursor drives progress (never sort order); a repeat would loop forever.
            if cursor in used_cursors:
                raise StripeUnavailableError(f"Stripe pagination of {path} repeated {cursor}")
            used_cursors.add(cursor)
            query["starting_after"] = cursor

    def list_subscriptions(self) -> Iterator[Page]:
        return self.list_pages("/v1/subscriptions", {"status": "all"})

    def list_invoices(self, *, lookback_days: int, now: datetime) -> Iterator[Page]:
        if lookback_days < 0:
            raise ValueError("lookback_days must be >= 0")
        since = _timestamp(now - timedelta(days=lookback_days))
        # Open and uncollectible invoices matter however old; the rest only if recent.
        yield from self.list_pages("/v1/invoices", {"status": "open"})
        yield from self.list_pages("/v1/invoices", {"status": "uncollectible"})
        yield from self.list_pages("/v1/invoices", {"created[gte]": since})

    def list_events(self, *, types: Sequence[str], created_gte: datetime) -> Iterator[Page]:
        if isinstance(types, str) or not types:
            raise ValueError("types must be a non-empty sequence of event type names")
        since = _timestamp(created_gte)
        unique = list(dict.fromkeys(types))
        for start in range(0, len(unique), _MAX_EVENT_TYPES):
            # The SDK encodes a list as `types[0]=..&types[1]=..`; Stripe accepts that form.
            # Pre-flattening keeps `list_pages` params flat (str | int values).
            chunk = unique[start : start + _MAX_EVENT_TYPES]
            params: dict[str, str | int] = {f"types[{i}]": t for i, t in enumerate(chunk)}
            params["created[gte]"] = since
            yield from self.list_pages("/v1/events", params)

    def retrieve(self, path: str) -> Retrieved | None:
        _check_path(path)
        try:
            response = self._send(path, {})
        except _ResourceMissing:
            return None
        data = response.data
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise StripeUnavailableError(f"Stripe returned a malformed object for GET {path}")
        return Retrieved(object=data, observed_at=self._observed_at(response))

    def retrieve_subscription(self, subscription_id: str) -> Retrieved | None:
        return self.retrieve(f"/v1/subscriptions/{_check_id(subscription_id)}")

    def retrieve_invoice(self, invoice_id: str) -> Retrieved | None:
        return self.retrieve(f"/v1/invoices/{_check_id(invoice_id)}")

    def account(self) -> StripeAccount:
        data = self._send("/v1/account", {}).data
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise StripeUnavailableError("Stripe returned a malformed object for GET /v1/account")
        return StripeAccount(id=data["id"], livemode=self._livemode)

    def _send(self, path: str, params: Mapping[str, str | int]) -> stripe.StripeResponse:
        """One logical GET: retries transient failures, maps the rest to product errors."""
        for attempt in range(1, self._max_attempts + 1):
            self.stats.requests += 1
            try:
                response: stripe.StripeResponse = self._client.raw_request(
                    "get", path, max_network_retries=0, **params
                )
                return response
            except stripe.StripeError as exc:
                failure = exc
            # Judged outside `except`, so an auth error never rides along as __context__.
            floor = self._retry_floor(path, failure)
            if attempt < self._max_attempts:
                self.stats.retries += 1
                self._sleep(max(floor, self._backoff(attempt)))
        raise StripeUnavailableError(
            f"Stripe GET {path} failed after {self._max_attempts} attempt(s); "
            f"last error: {_describe(failure)}"
        )

    def _retry_floor(self, path: str, exc: stripe.StripeError) -> float:
        """The minimum wait before retrying `exc`; raises when retrying cannot help."""
        if isinstance(exc, stripe.RateLimitError):  # 429, and the legacy 400 rate_limit
            self.stats.rate_limited += 1
            return _retry_after(exc.headers, self._clock())
        if isinstance(exc, stripe.APIConnectionError):
            if exc.should_retry:
                return 0.0
            # e.g. TLS verification failed or the URL is malformed: no retry will fix it.
            message = f"cannot reach Stripe for GET {path}: {_describe(exc)}"
            raise StripeUnavailableError(message) from exc
        if (exc.http_status or 0) >= 500:
            return 0.0
        # Auth errors quote the key (masked): keep them out of chained tracebacks.
        raise _refusal(path, exc) from (None if _is_auth(exc) else exc)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: concurrent runs hitting the same limit spread out instead of in lockstep.
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def _observed_at(self, response: stripe.StripeResponse) -> datetime:
        return _http_date(_header(response.headers, "Date")) or self._clock()


def _refusal(path: str, exc: stripe.StripeError) -> ReconcileError:
    status = exc.http_status or 0
    if _is_auth(exc):
        return StripeRequestError(
            f"Stripe refused the API key for GET {path}: {_describe(exc)}", hint=_AUTH_HINT
        )
    if 200 <= status < 300:  # the SDK could not parse a 2xx body
        return StripeUnavailableError(f"Stripe returned a malformed body for GET {path}")
    if status == 404 and _error_field(exc, "code") == "resource_missing":
        return _ResourceMissing(f"Stripe has no {path}: {_describe(exc)}")
    return StripeRequestError(f"Stripe refused GET {path}: {_describe(exc)}")


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


def _error_field(exc: stripe.StripeError, name: str) -> str | None:
    body = exc.json_body
    error = body.get("error") if isinstance(body, Mapping) else None
    value = error.get(name) if isinstance(error, Mapping) else None
    return value if isinstance(value, str) else None


def _list_body(path: str, data: object) -> tuple[tuple[Mapping[str, Any], ...], bool]:
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()  # requests gives a case-insensitive dict; other clients may not
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # "-0000" parses naive; HTTP dates are GMT by definition.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _retry_after(headers: Mapping[str, str] | None, now: datetime) -> float:
    raw = _header(headers or {}, "Retry-After")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        when = _http_date(raw)
        seconds = (when - now).total_seconds() if when else 0.0
    return min(max(seconds, 0.0), _RETRY_AFTER_CEILING) if math.isfinite(seconds) else 0.0


def _timestamp(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("datetimes sent to Stripe must be timezone-aware")
    return int(moment.timestamp())


def _check_path(path: str) -> None:
    if not _PATH_PATTERN.fullmatch(path):
        raise ValueError(f"not a Stripe v1 path: {path!r}")


def _check_id(object_id: str) -> str:
    # Ids may come from webhook bodies or operators; never let one reshape the request path.
    if not _ID_PATTERN.fullmatch(object_id):
        raise StripeRequestError(f"not a Stripe object id: {object_id[:80]!r}")
    return object_id
