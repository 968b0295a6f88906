"""Parallel created-window listing and the shared throttle."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping

import pytest

from reconcile.listing import Throttle, Window, list_windows, windows

OBJECTS = [{"id": f"sub_{n:04}", "created": 1_000 + n * 7} for n in range(500)]


def fetch_from(objects: list[dict[str, int | str]], page_size: int = 10):  # type: ignore[no-untyped-def]
    def fetch(params: Mapping[str, str | int]) -> Iterator[list[dict[str, int | str]]]:
        lo = params.get("created[gte]")
        hi = params.get("created[lt]")
        chosen = [
            o for o in objects
            if (lo is None or int(o["created"]) >= int(lo))
            and (hi is None or int(o["created"]) < int(hi))
        ]
        chosen.sort(key=lambda o: -int(o["created"]))
        for start in range(0, len(chosen), page_size):
            yield chosen[start : start + page_size]
    return fetch


def test_windows_cover_the_whole_axis_without_overlap() -> None:
    """Windows are contiguous, open-ended at both ends, and never overlap."""
    parts = windows(1_000, 5_000, 8)
    assert parts[0].gte is None and parts[-1].lt is None
    for left, right in itertools.pairwise(parts):
        assert left.lt == right.gte
    assert windows(10, 10, 4) == [Window(None, None)]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_parallel_listing_returns_exactly_the_sequential_objects(concurrency: int) -> None:
    """Every object is listed exactly once whatever the concurrency."""
    parts = windows(1_000, 1_000 + 500 * 7, 16)
    pages = list(list_windows(fetch_from(OBJECTS), {"limit": 10}, parts, concurrency=concurrency))
    ids = [o["id"] for page in pages for o in page]
    assert sorted(ids) == sorted(o["id"] for o in OBJECTS)
    assert len(ids) == len(set(ids))


def test_a_failing_window_raises_and_stops_the_listing() -> None:
    """An error in one window reaches the caller; the listing does not finish silently."""
    inner = fetch_from(OBJECTS)

    def fetch(params: Mapping[str, str | int]) -> Iterator[list[dict[str, int | str]]]:
        if params.get("created[gte]") is not None and int(params["created[gte]"]) > 3_000:
            raise RuntimeError("window broke")
        yield from inner(params)

    with pytest.raises(RuntimeError, match="window broke"):
        list(list_windows(fetch, {}, windows(1_000, 4_500, 8), concurrency=3, buffer_pages=2))


def test_consumer_leaving_early_does_not_hang_producers() -> None:
    """Breaking out of the iteration stops the workers (no thread is left blocked)."""
    before = threading.active_count()
    for _page in list_windows(fetch_from(OBJECTS, 1), {}, windows(1_000, 4_500, 8),
                              concurrency=4, buffer_pages=1):
        break
    for thread in threading.enumerate():
        if thread.name.startswith("listing"):
            thread.join(timeout=5)
    assert threading.active_count() <= before + 1


def test_throttle_paces_requests_at_its_rate() -> None:
    """At 10 requests/s, ten acquisitions take about one second of (fake) time."""
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(11):
        throttle.acquire()
    assert now[0] == pytest.approx(1.0)


def test_throttle_slows_down_on_429_and_recovers_slowly() -> None:
    """A 429 cuts the pace below what was achieved; successes raise it a little."""
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(30):
        throttle.acquire()  # unpaced: 30 in the same instant
    throttle.penalize()
    assert throttle.rate == pytest.approx(24.0)
    throttle.penalize()
    assert throttle.rate is not None and throttle.rate < 24.0
    slowed = throttle.rate
    throttle.reward()
    assert throttle.rate > slowed


def test_gateway_windows_against_the_emulator_match_the_sequential_listing() -> None:
    """Parallel created windows over HTTP list exactly the subscriptions one cursor lists."""
    from reconcile.emulator import StripeEmulator
    from reconcile.stripe_api import StripeGateway, make_client

    with StripeEmulator() as emu:
        emu.seed(600, rng_seed=3)
        emu.faults.rate_limit(40, path_prefix="/v1/subscriptions")

        def listed(concurrency: int, throttle: Throttle | None) -> list[str]:
            gateway = StripeGateway(
                make_client(emu.api_key, emu.url, 0), api_key_livemode=False,
                concurrency=concurrency, throttle=throttle, max_attempts=20,
                backoff_base=0.05, backoff_cap=0.2,
            )
            return [o["id"] for page in gateway.list_subscriptions() for o in page.objects]

        sequential = listed(1, None)
        throttle = Throttle()
        parallel = listed(4, throttle)
    assert len(sequential) == 600
    assert sorted(parallel) == sorted(sequential)
    assert len(parallel) == len(set(parallel))
