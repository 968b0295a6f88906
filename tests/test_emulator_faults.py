"""The Stripe emulator's fault injection, rate limiting and request counting."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from reconcile.emulator import StripeEmulator

START = 1_800_000_000


class FakeTime:
    """A monotonic clock and sleep that only move when told to."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)


@pytest.fixture
def fake_time() -> FakeTime:
    """Controllable time for latency and the token bucket."""
    return FakeTime()


@pytest.fixture
def emu(fake_time: FakeTime) -> Iterator[StripeEmulator]:
    """A started emulator whose sleeps and monotonic clock are fake."""
    with StripeEmulator(
        start_time=START, monotonic=fake_time.monotonic, sleep=fake_time.sleep
    ) as emulator:
        yield emulator


def get(emu: StripeEmulator, path: str) -> tuple[int, Any, Any]:
    """One authenticated GET on a fresh connection: (status, body, headers)."""
    url = urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {emu.api_key}"})
    response = conn.getresponse()
    out = response.status, json.loads(response.read()), response.headers
    conn.close()
    return out


def sdk(emu: StripeEmulator, retries: int = 0) -> stripe.StripeClient:
    """The real SDK pointed at the emulator."""
    return stripe.StripeClient(
        api_key=emu.api_key, base_addresses={"api": emu.url}, max_network_retries=retries
    )


def test_latency_applies_per_path_prefix(emu: StripeEmulator, fake_time: FakeTime) -> None:
    """The longest matching prefix decides the delay; other paths are not delayed."""
    emu.faults.add_latency(0.05)
    emu.faults.add_latency(0.5, path_prefix="/v1/invoices")
    get(emu, "/v1/subscriptions")
    get(emu, "/v1/invoices")
    get(emu, "/_emulator/clock")
    assert fake_time.naps == [0.05, 0.5]


def test_real_latency_slows_the_response() -> None:
    """With the real sleep, an injected delay is visible to the client."""
    import time

    with StripeEmulator(start_time=START) as emu:
        emu.faults.add_latency(0.2, path_prefix="/v1/account")
        started = time.perf_counter()
        assert get(emu, "/v1/account")[0] == 200
        assert time.perf_counter() - started >= 0.2


def test_429_with_and_without_should_retry(emu: StripeEmulator) -> None:
    """fail_next(429) answers rate_limit errors, with the Stripe-Should-Retry header if asked."""
    emu.faults.fail_next(1, status=429, path_prefix="/v1/subscriptions")
    emu.faults.fail_next(
        1, status=429, path_prefix="/v1/subscriptions", should_retry=True, retry_after=2
    )
    status, body, headers = get(emu, "/v1/subscriptions")
    assert status == 429 and body["error"]["code"] == "rate_limit"
    assert headers["Stripe-Should-Retry"] is None
    status, _, headers = get(emu, "/v1/subscriptions")
    assert status == 429 and headers["Stripe-Should-Retry"] == "true"
    assert headers["Retry-After"] == "2"
    assert get(emu, "/v1/subscriptions")[0] == 200


def test_sdk_retries_a_429_only_when_told_to(emu: StripeEmulator) -> None:
    """stripe-python retries a 429 carrying Stripe-Should-Retry: true, else raises."""
    emu.faults.fail_next(1, status=429, should_retry=True)
    assert sdk(emu, retries=1).v1.subscriptions.list()["object"] == "list"
    emu.faults.fail_next(1, status=429)
    with pytest.raises(stripe.RateLimitError):
        sdk(emu, retries=1).v1.subscriptions.list()


def test_500_is_an_api_error(emu: StripeEmulator) -> None:
    """fail_next(500) gives Stripe's api_error body; the request after it succeeds."""
    emu.faults.fail_next(1, status=500, should_retry=False)
    status, body, headers = get(emu, "/v1/account")
    assert status == 500 and body["error"]["type"] == "api_error"
    assert headers["Stripe-Should-Retry"] == "false"
    with pytest.raises(stripe.APIError):
        emu.faults.fail_next(1, status=500)
        sdk(emu).v1.subscriptions.list()
    assert get(emu, "/v1/account")[0] == 200


def test_connection_reset_gives_no_response(emu: StripeEmulator) -> None:
    """reset_next drops the connection; clients see a connection error, then recover."""
    emu.faults.reset_next(1, path_prefix="/v1/subscriptions")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        get(emu, "/v1/subscriptions")
    emu.faults.reset_next(1)
    with pytest.raises(stripe.APIConnectionError):
        sdk(emu).v1.subscriptions.list()
    assert get(emu, "/v1/subscriptions")[0] == 200


def test_faults_can_target_one_method(emu: StripeEmulator) -> None:
    """A fault limited to POST leaves GETs alone."""
    emu.faults.fail_next(1, status=500, method="POST")
    assert get(emu, "/v1/account")[0] == 200
    with pytest.raises(stripe.APIError):
        sdk(emu).v1.customers.create({"email": "a@b.test"})


def test_rate_limit_rejects_requests_beyond_the_rate(
    emu: StripeEmulator, fake_time: FakeTime
) -> None:
    """A 5/s token bucket passes a burst of 5, 429s the rest, and refills with time."""
    emu.faults.rate_limit(5, path_prefix="/v1/subscriptions")
    burst = [get(emu, "/v1/subscriptions")[0] for _ in range(8)]
    assert burst == [200] * 5 + [429] * 3
    assert get(emu, "/v1/invoices")[0] == 200
    fake_time.now += 0.5
    assert [get(emu, "/v1/subscriptions")[0] for _ in range(3)] == [200, 200, 429]
    emu.faults.clear()
    assert get(emu, "/v1/subscriptions")[0] == 200


def test_requests_are_counted_per_path(emu: StripeEmulator) -> None:
    """Counts are per path without the query, faulted requests included, and resettable."""
    emu.faults.fail_next(1, status=500)
    get(emu, "/v1/subscriptions?limit=3")
    get(emu, "/v1/subscriptions?limit=5")
    get(emu, "/v1/invoices")
    assert emu.request_counts() == {"/v1/subscriptions": 2, "/v1/invoices": 1}
    assert emu.request_count("/v1/invoices") == 1
    emu.reset_request_counts()
    assert emu.request_counts() == {}
