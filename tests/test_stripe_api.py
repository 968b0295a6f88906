"""StripeGateway against a fake Stripe (`responses` intercepts stripe's RequestsClient)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import stripe

from reconcile.errors import ConfigError, StripeRequestError, StripeUnavailableError
from reconcile.stripe_api import StripeGateway, key_livemode, make_client

API = "https://api.stripe.test"
KEY = "sk_test_51FAKEsecretKEY0123456789"
DATE = "Tue, 03 Nov 2026 10:20:30 GMT"
SUBS = f"{API}/v1/subscriptions"


class _Top(random.Random):
    """Jitter that always picks the top of its range, so backoff ceilings are observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _sub(n: int) -> dict[str, Any]:
    """A current-API subscription: the period lives on its items."""
    item = {"id": f"si_{n}", "object": "subscription_item", "current_period_end": 1793700000}
    return {
        "id": f"sub_{n}",
        "object": "subscription",
        "status": "active",
        "customer": f"cus_{n}",
        "items": {"object": "list", "data": [item], "has_more": False},
    }


def _page(objects: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "url": "/v1/x", "has_more": has_more, "data": objects}


def _error(status: int, code: str, message: str = "boom") -> dict[str, Any]:
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"error": {"type": kind, "code": code, "message": message}}


def _query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


@pytest.fixture
def fake() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _gateway(sleeps: list[float], key: str = KEY, **kwargs: Any) -> StripeGateway:
    client = make_client(key, API, kwargs.pop("sdk_retries", 0))
    kwargs.setdefault("rng", random.Random(7))
    return StripeGateway(client, api_key_livemode=key_livemode(key), sleep=sleeps.append, **kwargs)


def test_listing_follows_has_more_with_starting_after(fake: Any, sleeps: list[float]) -> None:
    """Three pages are fetched, each cursor being the previous page's last object id."""
    fake.get(SUBS, json=_page([_sub(1), _sub(2)], has_more=True))
    fake.get(SUBS, json=_page([_sub(3), _sub(4)], has_more=True))
    fake.get(SUBS, json=_page([_sub(5)]))
    gateway = _gateway(sleeps)
    pages = list(gateway.list_subscriptions())
    assert [o["id"] for p in pages for o in p.objects] == [f"sub_{n}" for n in range(1, 6)]
    assert [_query(c).get("starting_after") for c in fake.calls] == [None, ["sub_2"], ["sub_4"]]
    assert pages[0].objects[0]["items"]["data"][0]["current_period_end"] == 1793700000
    assert gateway.stats.requests == 3 and gateway.stats.retries == 0


def test_subscriptions_listing_sends_status_all_and_limit_100(
    fake: Any, sleeps: list[float]
) -> None:
    """Every subscriptions request asks for all statuses, 100 per page."""
    fake.get(SUBS, json=_page([]))
    list(_gateway(sleeps).list_subscriptions())
    assert _query(fake.calls[0]) == {"status": ["all"], "limit": ["100"]}


def test_invoices_run_open_uncollectible_and_recent_listings(
    fake: Any, sleeps: list[float]
) -> None:
    """Invoices come from three listings: open, uncollectible, and created in the lookback."""
    fake.get(f"{API}/v1/invoices", json=_page([{"id": "in_1", "object": "invoice"}]))
    now = datetime(2026, 11, 3, tzinfo=UTC)
    pages = list(_gateway(sleeps).list_invoices(lookback_days=2, now=now))
    assert len(pages) == 3
    assert [_query(c) for c in fake.calls] == [
        {"status": ["open"], "limit": ["100"]},
        {"status": ["uncollectible"], "limit": ["100"]},
        {"created[gte]": [str(int(now.timestamp()) - 2 * 86400)], "limit": ["100"]},
    ]


def test_events_listing_sends_types_and_created_gte(fake: Any, sleeps: list[float]) -> None:
    """Event types go as indexed types[n] (SDK array form) with created[gte]; >20 are split."""
    fake.get(f"{API}/v1/events", json=_page([]))
    since = datetime(2026, 10, 1, tzinfo=UTC)
    types = [f"t.{n}" for n in range(21)]
    list(_gateway(sleeps).list_events(types=types, created_gte=since))
    first, second = (_query(c) for c in fake.calls)
    assert first["types[0]"] == ["t.0"] and first["types[19]"] == ["t.19"]
    assert "types[20]" not in first and second["types[0]"] == ["t.20"]
    assert first["created[gte]"] == second["created[gte]"] == [str(int(since.timestamp()))]


def test_rate_limit_then_success_is_retried_and_counted(fake: Any, sleeps: list[float]) -> None:
    """A 429 is retried after a jittered backoff and counted in stats."""
    fake.get(SUBS, status=429, json=_error(429, "rate_limit"))
    fake.get(SUBS, json=_page([_sub(1)]))
    gateway = _gateway(sleeps)
    assert len(list(gateway.list_subscriptions())) == 1
    assert (gateway.stats.requests, gateway.stats.rate_limited, gateway.stats.retries) == (2, 1, 1)
    assert len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.5


def test_rate_limit_honours_retry_after(fake: Any, sleeps: list[float]) -> None:
    """A 429 with Retry-After waits at least that many seconds."""
    fake.get(SUBS, status=429, json=_error(429, "rate_limit"), headers={"Retry-After": "7"})
    fake.get(SUBS, json=_page([]))
    list(_gateway(sleeps).list_subscriptions())
    assert sleeps == [7.0]


def test_rate_limit_forever_gives_up_after_max_attempts(fake: Any, sleeps: list[float]) -> None:
    """Endless 429s end in StripeUnavailableError after max_attempts requests."""
    fake.get(SUBS, status=429, json=_error(429, "rate_limit", "Too many requests"))
    gateway = _gateway(sleeps, max_attempts=4)
    with pytest.raises(StripeUnavailableError, match=r"/v1/subscriptions.*Too many requests"):
        list(gateway.list_subscriptions())
    assert (gateway.stats.requests, gateway.stats.rate_limited, gateway.stats.retries) == (4, 4, 3)
    assert len(sleeps) == 3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_then_success(fake: Any, sleeps: list[float], status: int) -> None:
    """A 5xx is retried and the listing completes."""
    fake.get(SUBS, status=status, json=_error(status, "api_error"))
    fake.get(SUBS, json=_page([_sub(1)]))
    gateway = _gateway(sleeps)
    assert [o["id"] for p in gateway.list_subscriptions() for o in p.objects] == ["sub_1"]
    assert (gateway.stats.requests, gateway.stats.retries) == (2, 1)


def test_proxy_html_502_is_retried(fake: Any, sleeps: list[float]) -> None:
    """A 5xx whose body is not JSON (a proxy page) is still transient."""
    fake.get(SUBS, status=502, body="<html>Bad Gateway</html>")
    fake.get(SUBS, json=_page([]))
    assert len(list(_gateway(sleeps).list_subscriptions())) == 1


def test_connection_error_then_success(fake: Any, sleeps: list[float]) -> None:
    """A dropped connection is retried."""
    fake.get(SUBS, body=requests.ConnectionError("connection reset by peer"))
    fake.get(SUBS, json=_page([]))
    gateway = _gateway(sleeps)
    list(gateway.list_subscriptions())
    assert (gateway.stats.requests, gateway.stats.retries, len(sleeps)) == (2, 1, 1)


def test_tls_failure_is_not_retried(fake: Any, sleeps: list[float]) -> None:
    """A certificate failure will not heal by retrying: one attempt, then unavailable."""
    fake.get(SUBS, body=requests.exceptions.SSLError("certificate verify failed"))
    gateway = _gateway(sleeps)
    with pytest.raises(StripeUnavailableError, match="cannot reach Stripe"):
        list(gateway.list_subscriptions())
    assert (gateway.stats.requests, sleeps) == (1, [])


def test_backoff_doubles_up_to_the_cap(fake: Any, sleeps: list[float]) -> None:
    """Backoff ceilings double from backoff_base up to backoff_cap; the error names the path."""
    fake.get(SUBS, status=503, json=_error(503, "api_error", "overloaded"))
    gateway = _gateway(sleeps, max_attempts=6, backoff_cap=3.0, rng=_Top())
    with pytest.raises(StripeUnavailableError, match=r"/v1/subscriptions.*6 attempt.*overloaded"):
        list(gateway.list_subscriptions())
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_sdk_never_retries_behind_the_gateway(fake: Any, sleeps: list[float]) -> None:
    """Even a client built with SDK retries sends exactly one request per gateway attempt."""
    fake.get(SUBS, status=500, json=_error(500, "api_error"))
    gateway = _gateway(sleeps, sdk_retries=3, max_attempts=2)
    with pytest.raises(StripeUnavailableError):
        list(gateway.list_subscriptions())
    assert len(fake.calls) == gateway.stats.requests == 2


def test_retrieve_resource_missing_returns_none(fake: Any, sleeps: list[float]) -> None:
    """A 404 resource_missing on retrieve means the object is gone: None."""
    fake.get(f"{SUBS}/sub_gone", status=404, json=_error(404, "resource_missing"))
    assert _gateway(sleeps).retrieve_subscription("sub_gone") is None


def test_retrieve_other_404_raises(fake: Any, sleeps: list[float]) -> None:
    """A 404 that is not resource_missing (e.g. a wrong URL) is not mistaken for a deletion."""
    fake.get(f"{API}/v1/invoices/in_1", status=404, json=_error(404, "", "Unrecognized URL"))
    with pytest.raises(StripeRequestError, match="Unrecognized URL"):
        _gateway(sleeps).retrieve_invoice("in_1")


def test_retrieve_returns_object_and_date(fake: Any, sleeps: list[float]) -> None:
    """A retrieved object comes back as sent, observed at the response's Date."""
    fake.get(f"{SUBS}/sub_1", json=_sub(1), headers={"Date": DATE})
    got = _gateway(sleeps).retrieve_subscription("sub_1")
    assert got is not None and got.object == _sub(1)
    assert got.observed_at == datetime(2026, 11, 3, 10, 20, 30, tzinfo=UTC)


def test_list_404_raises_request_error(fake: Any, sleeps: list[float]) -> None:
    """A 404 on a listing is a refusal, never an empty result."""
    fake.get(SUBS, status=404, json=_error(404, "resource_missing", "No such thing"))
    with pytest.raises(StripeRequestError, match=r"/v1/subscriptions.*resource_missing"):
        list(_gateway(sleeps).list_subscriptions())


def test_other_4xx_names_path_code_and_message(fake: Any, sleeps: list[float]) -> None:
    """A 400 is not retried and the error names the path, Stripe's code and message."""
    fake.get(SUBS, status=400, json=_error(400, "parameter_unknown", "Received unknown parameter"))
    gateway = _gateway(sleeps)
    with pytest.raises(StripeRequestError) as caught:
        list(gateway.list_subscriptions())
    assert "/v1/subscriptions" in str(caught.value) and "parameter_unknown" in str(caught.value)
    assert "Received unknown parameter" in str(caught.value) and gateway.stats.requests == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_has_hint_and_never_the_key(
    fake: Any, sleeps: list[float], status: int
) -> None:
    """401/403 raise StripeRequestError with a key hint and no trace of the key."""
    message = f"Invalid API Key provided: {KEY[:8]}****{KEY[-4:]} / {KEY}"
    fake.get(f"{API}/v1/account", status=status, json=_error(status, "", message))
    with pytest.raises(StripeRequestError) as caught:
        _gateway(sleeps).account()
    error = caught.value
    assert error.hint is not None and "STRIPE_API_KEY" in error.hint and "events" in error.hint
    rendered = f"{error} {error!r} {error.__cause__!r} {error.__context__!r}"
    assert KEY not in rendered and KEY[-4:] not in rendered and "sk_test_" not in rendered


def test_malformed_list_body_is_unavailable(fake: Any, sleeps: list[float]) -> None:
    """A 200 that is not a list object raises StripeUnavailableError."""
    fake.get(SUBS, json={"object": "subscription", "id": "sub_1"})
    with pytest.raises(StripeUnavailableError, match="malformed"):
        list(_gateway(sleeps).list_subscriptions())


def test_non_json_200_is_unavailable(fake: Any, sleeps: list[float]) -> None:
    """A 200 whose body is not JSON raises StripeUnavailableError."""
    fake.get(SUBS, body="<html>captive portal</html>")
    with pytest.raises(StripeUnavailableError, match="malformed"):
        list(_gateway(sleeps).list_subscriptions())


def test_has_more_with_a_repeated_cursor_stops(fake: Any, sleeps: list[float]) -> None:
    """A listing whose cursor does not advance fails instead of looping forever."""
    fake.get(SUBS, json=_page([_sub(1)], has_more=True))
    with pytest.raises(StripeUnavailableError, match="repeated sub_1"):
        list(_gateway(sleeps).list_subscriptions())


def test_date_header_sets_observed_at(fake: Any, sleeps: list[float]) -> None:
    """observed_at is Stripe's Date header, in UTC."""
    fake.get(SUBS, json=_page([]), headers={"Date": DATE})
    (page,) = _gateway(sleeps).list_subscriptions()
    assert page.observed_at == datetime(2026, 11, 3, 10, 20, 30, tzinfo=UTC)


def test_missing_date_header_falls_back_to_clock(fake: Any, sleeps: list[float]) -> None:
    """Without a usable Date header, observed_at is the local clock."""
    fake.get(SUBS, json=_page([]), headers={"Date": "not a date"})
    local = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    (page,) = _gateway(sleeps, clock=lambda: local).list_subscriptions()
    assert page.observed_at == local


@pytest.mark.parametrize(
    ("key", "live"),
    [("sk_live_abc", True), ("rk_live_abc", True), ("sk_test_abc", False), ("rk_test_abc", False)],
)
def test_account_livemode_comes_from_the_key(
    fake: Any, sleeps: list[float], key: str, live: bool
) -> None:
    """account() returns Stripe's account id and the key's mode."""
    fake.get(f"{API}/v1/account", json={"id": "acct_123", "object": "account"})
    account = _gateway(sleeps, key=key).account()
    assert (account.id, account.livemode) == ("acct_123", live)


def test_unknown_key_prefix_is_a_config_error() -> None:
    """A publishable or malformed key is rejected without echoing it."""
    with pytest.raises(ConfigError) as caught:
        make_client("pk_live_secretish", API, 0)
    assert "secretish" not in str(caught.value)


def test_requests_carry_the_pinned_api_version_and_key(fake: Any, sleeps: list[float]) -> None:
    """Every request authenticates with the key and pins stripe's API version."""
    fake.get(SUBS, json=_page([]))
    list(_gateway(sleeps).list_subscriptions())
    headers = fake.calls[0].request.headers
    assert headers["Stripe-Version"] == "2026-10-28.endive"
    assert headers["Authorization"] == f"Bearer {KEY}"


def test_bad_object_id_is_refused_before_sending(fake: Any, sleeps: list[float]) -> None:
    """An id that could reshape the request path is refused without a request."""
    gateway = _gateway(sleeps)
    with pytest.raises(StripeRequestError):
        gateway.retrieve_invoice("in_1/../../v1/account")
    assert gateway.stats.requests == 0


def test_make_client_silences_stripe_debug_output(
    fake: Any,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """STRIPE_LOG=debug and a DEBUG root logger still yield no stripe output below WARNING."""
    monkeypatch.setattr(stripe._util, "STRIPE_LOG", "debug")
    monkeypatch.setattr(stripe, "log", "debug")
    stripe_logger = logging.getLogger("stripe")
    original_level = stripe_logger.level
    stripe_logger.setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    try:
        fake.get(SUBS, json=_page([_sub(1)]))
        list(_gateway(sleeps).list_subscriptions())
        assert capsys.readouterr().err == ""
        assert not [r for r in caplog.records if r.name.startswith("stripe")]
        assert stripe_logger.getEffectiveLevel() >= logging.WARNING
    finally:
        stripe_logger.setLevel(original_level)
