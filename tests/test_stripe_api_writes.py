"""StripeGateway's writes and probes: pay_invoice, webhook endpoints, Stripe's Date."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses

from reconcile.errors import StripeRequestError, StripeUnavailableError
from reconcile.stripe_api import StripeGateway, key_livemode, make_client

API = "https://api.stripe.test"
KEY = "sk_test_51FAKEsecretKEY0123456789"
DATE = "Tue, 03 Nov 2026 10:20:30 GMT"
PAY = f"{API}/v1/invoices/in_1/pay"
IDEM = "stripe-reconcile-retry:in_1:1"


def _invoice(status: str = "paid") -> dict[str, Any]:
    return {"id": "in_1", "object": "invoice", "status": status, "customer": "cus_1"}


def _error(kind: str, code: str, **extra: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": "boom", **extra}}


@pytest.fixture
def fake() -> Iterator[responses.RequestsMock]:
    """HTTP mocks that fail the test if a registered response is left unused."""
    with responses.RequestsMock() as mock:
        yield mock


def _gateway(clock: list[datetime] | None = None) -> StripeGateway:
    ticks = iter(clock or [])
    return StripeGateway(
        make_client(KEY, API, 0), api_key_livemode=key_livemode(KEY), sleep=lambda s: None,
        rng=random.Random(3), max_attempts=4,
        clock=lambda: next(ticks, datetime(2026, 11, 3, tzinfo=UTC)),
    )


def _keys(fake: responses.RequestsMock) -> list[str | None]:
    return [str(c.request.headers.get("Idempotency-Key")) for c in fake.calls]


def test_pay_sends_key_and_off_session_and_returns_the_paid_invoice(fake: Any) -> None:
    """A 200 is `succeeded` with the invoice; the key and off_session=true are sent."""
    fake.post(PAY, json=_invoice(), headers={"Date": DATE})
    outcome = _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert outcome.status == "succeeded" and outcome.invoice == _invoice()
    assert outcome.observed_at == datetime(2026, 11, 3, 10, 20, 30, tzinfo=UTC)
    assert _keys(fake) == [IDEM]
    body = fake.calls[0].request.body
    assert parse_qs(body if isinstance(body, str) else body.decode()) == {"off_session": ["true"]}


def test_card_decline_is_an_outcome_not_an_exception(fake: Any) -> None:
    """A 402 card_error returns `declined` with its codes, and is not retried."""
    fake.post(PAY, status=402, json=_error("card_error", "card_declined",
                                           decline_code="insufficient_funds"))
    outcome = _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert (outcome.status, outcome.code, outcome.decline_code) == (
        "declined", "card_declined", "insufficient_funds")
    assert outcome.invoice is None and len(fake.calls) == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (402, _error("card_error", "authentication_required",
                     decline_code="authentication_required"), "requires_action"),
        (402, _error("card_error", "invoice_payment_intent_requires_action"), "requires_action"),
        (400, _error("invalid_request_error", "invoice_no_payment_method"), "failed"),
        (400, _error("invalid_request_error", "invoice_already_paid"), "failed"),
        (404, _error("invalid_request_error", "resource_missing"), "failed"),
    ],
)
def test_refusals_about_the_invoice_are_outcomes(
    fake: Any, status: int, body: dict[str, Any], expected: str
) -> None:
    """Authentication needed, no payment method or a settled invoice are outcomes too."""
    fake.post(PAY, status=status, json=body)
    outcome = _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert outcome.status == expected and outcome.code == body["error"]["code"]


def test_open_invoice_after_pay_is_processing(fake: Any) -> None:
    """A 2xx whose invoice is still open (a bank debit settling) is `processing`."""
    fake.post(PAY, json=_invoice("open"), headers={"Idempotent-Replayed": "true"})
    outcome = _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert outcome.status == "processing" and outcome.replayed


@pytest.mark.parametrize(
    "first",
    [
        {"body": requests.ConnectionError("reset")},
        {"status": 500, "json": _error("api_error", "internal")},
        {"status": 429, "json": _error("invalid_request_error", "rate_limit")},
        {"status": 409, "json": _error("idempotency_error", "idempotency_key_in_use")},
    ],
    ids=["network", "500", "429", "409-key-in-use"],
)
def test_transient_failures_are_retried_with_the_same_key(fake: Any, first: dict[str, Any]) -> None:
    """Network errors, 5xx, 429 and 409 are retried, every time with the same key."""
    fake.post(PAY, **first)
    fake.post(PAY, json=_invoice(), headers={"Idempotent-Replayed": "true"})
    gateway = _gateway()
    outcome = gateway.pay_invoice("in_1", idempotency_key=IDEM)
    assert outcome.status == "succeeded" and outcome.replayed
    assert _keys(fake) == [IDEM, IDEM]
    assert gateway.stats.retries == 1


def test_should_retry_false_on_a_5xx_stops_with_unknown_outcome(fake: Any) -> None:
    """A 5xx Stripe says not to retry raises StripeUnavailableError: the outcome is unknown."""
    fake.post(PAY, status=500, json=_error("api_error", "internal"),
              headers={"Stripe-Should-Retry": "false"})
    with pytest.raises(StripeUnavailableError, match="POST /v1/invoices/in_1/pay"):
        _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert len(fake.calls) == 1


def test_exhausted_retries_raise_unavailable(fake: Any) -> None:
    """When every attempt fails the caller learns the outcome is unknown, not a decline."""
    for _ in range(4):
        fake.post(PAY, status=503, json=_error("api_error", "unavailable"))
    with pytest.raises(StripeUnavailableError, match="after 4 attempt"):
        _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert _keys(fake) == [IDEM] * 4


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _error("idempotency_error", "idempotency_key_in_use")),
        (401, _error("invalid_request_error", "api_key_expired")),
    ],
    ids=["key-reused-with-other-params", "auth"],
)
def test_our_own_mistakes_raise(fake: Any, status: int, body: dict[str, Any]) -> None:
    """A key reused with other parameters, or a refused API key, raise instead of returning."""
    fake.post(PAY, status=status, json=body)
    with pytest.raises(StripeRequestError) as caught:
        _gateway().pay_invoice("in_1", idempotency_key=IDEM)
    assert not isinstance(caught.value, StripeUnavailableError)
    assert KEY not in str(caught.value)


def test_pay_refuses_without_key_or_with_a_bad_id() -> None:
    """No key, or an id that would reshape the path, never reaches Stripe."""
    with pytest.raises(ValueError):
        _gateway().pay_invoice("in_1", idempotency_key="")
    with pytest.raises(StripeRequestError):
        _gateway().pay_invoice("in_1/../x", idempotency_key=IDEM)


def test_list_webhook_endpoints_follows_pages(fake: Any) -> None:
    """Every endpoint across pages, with its url, status, events and API version."""
    first = {"id": "we_1", "object": "webhook_endpoint", "url": "https://a.example/hook",
             "status": "enabled", "enabled_events": ["*"], "api_version": None, "livemode": False}
    second = {**first, "id": "we_2", "status": "disabled", "enabled_events": ["invoice.paid"],
              "api_version": "2026-10-28.endive"}
    fake.get(f"{API}/v1/webhook_endpoints",
             json={"object": "list", "data": [first], "has_more": True, "url": "/v1/x"})
    fake.get(f"{API}/v1/webhook_endpoints",
             json={"object": "list", "data": [second], "has_more": False, "url": "/v1/x"})
    endpoints = _gateway().list_webhook_endpoints()
    assert [(e.id, e.status, e.enabled_events, e.api_version) for e in endpoints] == [
        ("we_1", "enabled", ("*",), None),
        ("we_2", "disabled", ("invoice.paid",), "2026-10-28.endive"),
    ]
    assert "starting_after=we_1" in (fake.calls[1].request.url or "")


def test_probe_account_reads_stripe_date_and_our_clock(fake: Any) -> None:
    """The probe returns Stripe's Date and our clock just before and after the request."""
    fake.get(f"{API}/v1/account", json={"id": "acct_1"}, headers={"Date": DATE})
    before, after = datetime(2026, 11, 3, 10, 21, tzinfo=UTC), datetime(
        2026, 11, 3, 10, 21, 1, tzinfo=UTC)
    probe = _gateway([before, after]).probe_account()
    assert probe.account.id == "acct_1" and probe.account.livemode is False
    assert probe.stripe_date == datetime(2026, 11, 3, 10, 20, 30, tzinfo=UTC)
    assert (probe.sent_at, probe.received_at) == (before, after)


def test_probe_without_date_header_has_no_stripe_date(fake: Any) -> None:
    """A response without a usable Date gives None, never our own clock in disguise."""
    fake.get(f"{API}/v1/account", json={"id": "acct_1"}, headers={"Date": "garbage"})
    assert _gateway().probe_account().stripe_date is None
