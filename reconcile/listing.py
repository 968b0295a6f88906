"""Parallel listing: several `created` windows paginated at once under one shared throttle.

Stripe serves a list endpoint at a bounded rate and each page takes a round trip, so one
sequential cursor is latency-bound (1,000 pages x 300 ms = 300 s) far above the rate-limit
floor (1,000 pages / 25 per s = 40 s). Splitting the `created` axis into windows lets several
cursors run at once; the throttle keeps them together under the rate and backs off on 429.
Windows cover the whole axis (the first has no lower bound, the last no upper bound), so the
union is exactly the sequential listing.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

P = TypeVar("P")
Fetch = Callable[[Mapping[str, str | int]], Iterator[P]]


class Throttle:
    """A thread-safe request pacer: token bucket plus additive-increase/multiplicative-decrease.

    `rate` None means unpaced until the first 429, which sets a rate below what was being
    achieved; each later 429 cuts it, and every success nudges it back up.
    """

    def __init__(
        self, rate: float | None = None, *, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep, floor: float = 1.0,
    ) -> None:
        self._lock = threading.Lock()
        self._rate = rate
        self._clock, self._sleep, self._floor = clock, sleep, floor
        self._next_slot = clock()
        self._recent: list[float] = []

    @property
    def rate(self) -> float | None:
        """Current pace in requests per second (None: unpaced)."""
        return self._rate

    def acquire(self) -> None:
        """Block until this request may go."""
        with self._lock:
            now = self._clock()
            self._recent = [t for t in self._recent if now - t < 1.0] + [now]
            if self._rate is None:
                return
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self._rate
        if slot > now:
            self._sleep(slot - now)

    def penalize(self) -> None:
        """A 429 arrived: slow everyone down."""
        with self._lock:
            achieved = float(max(len(self._recent), 1))
            current = self._rate if self._rate is not None else achieved
            self._rate = max(self._floor, min(current, achieved) * 0.8)
            self._next_slot = self._clock() + 1.0 / self._rate

    def reward(self) -> None:
        """A request succeeded: probe for more room (a 429 only costs one retried request)."""
        with self._lock:
            if self._rate is not None:
                self._rate += 0.1


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open range of `created` epoch seconds; None means unbounded."""

    gte: int | None
    lt: int | None

    def params(self) -> dict[str, str | int]:
        """Stripe's filter parameters for this window."""
        found: dict[str, str | int] = {}
        if self.gte is not None:
            found["created[gte]"] = self.gte
        if self.lt is not None:
            found["created[lt]"] = self.lt
        return found


def windows(start: int, end: int, count: int) -> list[Window]:
    """`count` windows splitting [start, end) evenly, the outer two left open-ended."""
    if count <= 1 or end <= start:
        return [Window(None, None)]
    step = max(1, (end - start) // count)
    cuts = [start + step * i for i in range(1, count)]
    cuts = [c for c in cuts if c < end]
    bounds: list[int | None] = [None, *cuts, None]
    return [Window(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


_DONE = object()


def list_windows(
    fetch: Fetch[P], base: Mapping[str, str | int], parts: list[Window], *,
    concurrency: int, buffer_pages: int = 32,
) -> Iterator[P]:
    """Pages of every window, `concurrency` windows at a time, in completion order."""
    sources = [functools.partial(fetch, {**base, **part.params()}) for part in parts]
    return in_background(sources, concurrency=concurrency, buffer_pages=buffer_pages)


def in_background(
    sources: Sequence[Callable[[], Iterator[P]]], *, concurrency: int = 1,
    buffer_pages: int = 32,
) -> Iterator[P]:
    """Pages of every source, fetched by worker threads while the caller consumes them.

    Even one source gains: the next page's round trip overlaps the caller's work on this
    one. Pages pass through a bounded queue, so memory stays flat; the first error from any
    source is raised here, after which nothing more is yielded.
    """
    out: queue.Queue[object] = queue.Queue(maxsize=buffer_pages)
    stop = threading.Event()  # set when the consumer leaves or a source failed
    gone = threading.Event()  # set when the consumer leaves

    def hand_over(item: object) -> bool:
        """Put into the queue unless the consumer has gone; a slow consumer is waited for."""
        while not gone.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work(source: Callable[[], Iterator[P]]) -> None:
        try:
            for page in source():
                if stop.is_set() or not hand_over(page):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            stop.set()
            hand_over(exc)

    def run_all() -> None:
        workers = max(1, min(concurrency, len(sources)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="listing") as pool:
            list(pool.map(work, sources))
        hand_over(_DONE)

    threading.Thread(target=run_all, name="listing-pool", daemon=True).start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        gone.set()
        stop.set()
