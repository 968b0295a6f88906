"""`StripeGateway`: listings, retrieves and payments with our retry policy (see the package)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import stripe
from stripe._request_options import RequestOptions, extract_options_from_dict

from reconcile.errors import StripeUnavailableError
from reconcile.listing import Throttle, list_windows, windows
from reconcile.stripe_api.errors import (
    _describe,
    _is_auth,
    _PaymentRefused,
    _refusal,
    _ResourceMissing,
)
from reconcile.stripe_wire import (
    AccountProbe,
    Page,
    PayOutcome,
    RequestStats,
    Retrieved,
    StripeAccount,
    WebhookEndpoint,
    check_id,
    check_path,
    header,
    http_date,
    list_body,
    pay_outcome_from_error,
    pay_outcome_from_invoice,
    retry_after,
    timestamp,
    webhook_endpoint_from_payload,
)

# The API version the SDK pins every request to; webhook endpoints should render events in it.
PINNED_API_VERSION: str = stripe.api_version
_PAGE_LIMIT = 100
_MAX_EVENT_TYPES = 20  # Stripe rejects more than 20 `types` per events request
# Keys `raw_request` takes as request options (or routing), not as query parameters.
_RESERVED_PARAMS = RequestOptions.__optional_keys__ | {"base", "usage"}


class _Response(Protocol):
    """What the gateway reads from a response: `StripeResponse` and `_PlainResponse`."""

    @property
    def data(self) -> Any: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class _PlainResponse:
    """The parts of a 2xx response the gateway reads (`StripeResponse`'s names)."""

    data: Any
    code: int
    headers: Mapping[str, str]


# Subscriptions older than this all fall into the first (open-ended) window. Windows are
# consumed by `concurrency` threads from a queue; several per thread balance uneven months.
_WINDOW_HORIZON_S = 365 * 86400
_WINDOWS_PER_THREAD = 6


class StripeGateway:
    """Access to Stripe with our retry policy; see the module docstring."""

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
        throttle: Throttle | None = None,
        concurrency: int = 1,
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
        # Our clock: for responses lacking a usable Date header, and around skew probes.
        self._clock = clock
        self.stats = RequestStats()
        # Listings may run in several threads (created windows); they share the pace.
        self._throttle = throttle
        self._concurrency = max(1, concurrency)
        self._stats_lock = threading.Lock()

    def list_pages(self, path: str, params: Mapping[str, str | int]) -> Iterator[Page]:
        check_path(path)
        if reserved := _RESERVED_PARAMS.intersection(params):
            raise ValueError(f"reserved parameter(s) {sorted(reserved)} for {path}")
        query: dict[str, str | int] = {"limit": _PAGE_LIMIT, **params}
        used_cursors: set[str] = set()
        while True:
            response = self._send(path, query)
            objects, has_more = list_body(path, response.data)
            yield Page(objects=objects, observed_at=self._observed_at(response.headers))
            if not has_more:
                return
            cursor = objects[-1]["id"]
            # Only the cursor drives progress (never sort order); a repeat would loop forever.
            if cursor in used_cursors:
                raise StripeUnavailableError(f"Stripe pagination of {path} repeated {cursor}")
            used_cursors.add(cursor)
            query["starting_after"] = cursor

    def list_subscriptions(self) -> Iterator[Page]:
        base: dict[str, str | int] = {"status": "all", "limit": _PAGE_LIMIT}
        if self._concurrency <= 1:
            return self.list_pages("/v1/subscriptions", base)
        # Several cursors over `created` windows; the outer windows are open-ended, so the
        # union is the whole listing whatever the horizon guessed here.
        end = timestamp(self._clock()) + 1
        parts = windows(end - _WINDOW_HORIZON_S, end, self._concurrency * _WINDOWS_PER_THREAD)
        return list_windows(
            lambda params: self.list_pages("/v1/subscriptions", params), base, parts,
            concurrency=self._concurrency,
        )

    def list_invoices(self, *, lookback_days: int, now: datetime) -> Iterator[Page]:
        if lookback_days < 0:
            raise ValueError("lookback_days must be >= 0")
        since = timestamp(now - timedelta(days=lookback_days))
        # Open and uncollectible invoices matter however old; the rest only if recent.
        yield from self.list_pages("/v1/invoices", {"status": "open"})
        yield from self.list_pages("/v1/invoices", {"status": "uncollectible"})
        yield from self.list_pages("/v1/invoices", {"created[gte]": since})

    def list_events(self, *, types: Sequence[str], created_gte: datetime) -> Iterator[Page]:
        if isinstance(types, str) or not types:
            raise ValueError("types must be a non-empty sequence of event type names")
        since = timestamp(created_gte)
        unique = list(dict.fromkeys(types))
        for start in range(0, len(unique), _MAX_EVENT_TYPES):
            # The SDK encodes a list as `types[0]=..&types[1]=..`; Stripe accepts that form.
            # Pre-flattening keeps `list_pages` params flat (str | int values).
            chunk = unique[start : start + _MAX_EVENT_TYPES]
            params: dict[str, str | int] = {f"types[{i}]": t for i, t in enumerate(chunk)}
            params["created[gte]"] = since
            yield from self.list_pages("/v1/events", params)

    def list_webhook_endpoints(self) -> tuple[WebhookEndpoint, ...]:
        """Every webhook endpoint of the key's account and mode."""
        pages = self.list_pages("/v1/webhook_endpoints", {})
        return tuple(webhook_endpoint_from_payload(o) for page in pages for o in page.objects)

    def retrieve(self, path: str) -> Retrieved | None:
        check_path(path)
        try:
            response = self._send(path, {})
        except _ResourceMissing:
            return None
        data = response.data
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise StripeUnavailableError(f"Stripe returned a malformed object for GET {path}")
        return Retrieved(object=data, observed_at=self._observed_at(response.headers))

    def retrieve_subscription(self, subscription_id: str) -> Retrieved | None:
        return self.retrieve(f"/v1/subscriptions/{check_id(subscription_id)}")

    def retrieve_invoice(self, invoice_id: str) -> Retrieved | None:
        return self.retrieve(f"/v1/invoices/{check_id(invoice_id)}")

    def account(self) -> StripeAccount:
        return self.probe_account().account

    def probe_account(self) -> AccountProbe:
        """GET /v1/account, keeping Stripe's Date and our clock before and after."""
        sent_at = self._clock()
        response = self._send("/v1/account", {})
        received_at = self._clock()
        data = response.data
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise StripeUnavailableError("Stripe returned a malformed object for GET /v1/account")
        return AccountProbe(
            account=StripeAccount(id=data["id"], livemode=self._livemode),
            stripe_date=http_date(header(response.headers, "Date")),
            sent_at=sent_at, received_at=received_at,
        )

    def pay_invoice(
        self, invoice_id: str, *, idempotency_key: str, off_session: bool = True
    ) -> PayOutcome:
        """Charge an open invoice's stored payment method; a decline is returned, not raised.

        Raises StripeUnavailableError when the outcome is unknown (retries exhausted): the
        caller must retry later with the *same* key, which Stripe answers from its cache.
        """
        if not idempotency_key:
            raise ValueError("pay_invoice needs an idempotency key")
        path = f"/v1/invoices/{check_id(invoice_id)}/pay"
        params = {"off_session": "true" if off_session else "false"}
        try:
            response = self._send(path, params, idempotency_key=idempotency_key)
        except _PaymentRefused as refused:
            replayed = header(refused.headers, "Idempotent-Replayed") == "true"
            observed_at = self._observed_at(refused.headers)
            return pay_outcome_from_error(
                refused.http_status, refused.error, observed_at, replayed=replayed
            )
        data = response.data
        if not isinstance(data, Mapping) or data.get("object") != "invoice":
            raise StripeUnavailableError(f"Stripe returned a malformed invoice for POST {path}")
        replayed = header(response.headers, "Idempotent-Replayed") == "true"
        observed_at = self._observed_at(response.headers)
        return pay_outcome_from_invoice(data, observed_at, replayed=replayed)

    def _send(
        self, path: str, params: Mapping[str, str | int], *, idempotency_key: str | None = None
    ) -> _Response:
        """One logical request (GET, or POST with a key): retries transient failures only."""
        verb = "GET" if idempotency_key is None else "POST"
        options: dict[str, Any] = {"max_network_retries": 0}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        for attempt in range(1, self._max_attempts + 1):
            if self._throttle is not None:
                self._throttle.acquire()
            with self._stats_lock:
                self.stats.requests += 1
            try:
                response = self._request(verb, path, options, params)
                if self._throttle is not None:
                    self._throttle.reward()
                return response
            except stripe.StripeError as exc:
                failure = exc
            # Judged outside `except`, so an auth error never rides along as __context__.
            floor = self._retry_floor(verb, path, failure)
            if attempt < self._max_attempts:
                self.stats.retries += 1
                self._sleep(max(floor, self._backoff(attempt)))
        raise StripeUnavailableError(
            f"Stripe {verb} {path} failed after {self._max_attempts} attempt(s); "
            f"last error: {_describe(failure)}"
        )

    def _request(
        self, verb: str, path: str, options: dict[str, Any], params: Mapping[str, str | int]
    ) -> _Response:
        """`raw_request`, but a 2xx body is parsed into plain dicts.

        The SDK parses every body with an OrderedDict hook, a third slower than plain
        `json.loads`, and listings parse hundreds of MB. Errors still go through the SDK's
        own interpretation, so they raise exactly as `raw_request` would. Private SDK API
        (pinned <17): if it is not there, fall back to `raw_request`.
        """
        requestor = getattr(self._client, "_requestor", None)
        if requestor is None or not hasattr(requestor, "request_raw"):
            sdk: stripe.StripeResponse = self._client.raw_request(
                verb.lower(), path, **options, **params
            )
            return sdk
        request_options, body_params = extract_options_from_dict({**options, **params})
        rbody, rcode, rheaders = requestor.request_raw(
            verb.lower(), path, params=body_params, options=request_options,
            base_address="api", api_mode="V1", usage=["raw_request"],
        )
        if 200 <= rcode < 300:
            try:
                return _PlainResponse(json.loads(rbody), rcode, rheaders)
            except ValueError:
                pass  # let the SDK report a malformed body its own way
        interpreted: stripe.StripeResponse = requestor._interpret_response(
            rbody, rcode, rheaders, "V1"
        )
        return interpreted

    def _retry_floor(self, verb: str, path: str, exc: stripe.StripeError) -> float:
        """The minimum wait before retrying `exc`; raises when retrying cannot help."""
        if isinstance(exc, stripe.RateLimitError):  # 429, and the legacy 400 rate_limit
            with self._stats_lock:
                self.stats.rate_limited += 1
            if self._throttle is not None:
                self._throttle.penalize()
            return retry_after(exc.headers, self._clock())
        if isinstance(exc, stripe.APIConnectionError):
            if exc.should_retry:
                return 0.0
            # e.g. TLS verification failed or the URL is malformed: no retry will fix it.
            message = f"cannot reach Stripe for {verb} {path}: {_describe(exc)}"
            raise StripeUnavailableError(message) from exc
        status = exc.http_status or 0
        if verb == "POST":
            should_retry = header(exc.headers, "Stripe-Should-Retry")
            if status >= 500 and should_retry == "false":
                # Stripe ran the request and stored this error; the outcome is not ours to know.
                raise StripeUnavailableError(f"Stripe {verb} {path} failed: {_describe(exc)}")
            if status == 409 or should_retry == "true":  # 409: the same key is still running
                return 0.0
        if status >= 500:
            return 0.0
        # Auth errors quote the key (masked): keep them out of chained tracebacks.
        raise _refusal(verb, path, exc) from (None if _is_auth(exc) else exc)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: concurrent runs hitting the same limit spread out instead of in lockstep.
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def _observed_at(self, headers: Mapping[str, str] | None) -> datetime:
        return http_date(header(headers, "Date")) or self._clock()
