"""Fault injection: latency, one-shot error statuses, connection resets and rate limits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ApiError, rate_limited, retry_headers, server_error


@dataclass
class _OneShot:
    prefix: str
    method: str | None
    remaining: int
    status: int | None  # None: reset the connection instead of answering
    headers: dict[str, str]


@dataclass
class _Bucket:
    prefix: str
    rate: float
    capacity: float
    tokens: float
    last: float
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request before (or instead of) serving it."""

    latency: float = 0.0
    error: ApiError | None = None
    reset: bool = False


class FaultInjector:
    """Per-path-prefix faults, consulted once per API request (never for /_emulator)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._latency: dict[str, float] = {}
        self._one_shots: list[_OneShot] = []
        self._buckets: list[_Bucket] = []

    def add_latency(self, seconds: float, path_prefix: str = "/v1/") -> None:
        """Delay every request under `path_prefix`; the longest matching prefix wins."""
        with self._lock:
            self._latency[path_prefix] = seconds

    def fail_next(
        self,
        count: int,
        *,
        status: int = 500,
        path_prefix: str = "/v1/",
        should_retry: bool | None = None,
        retry_after: float | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `count` matching requests with `status` (429 gives `rate_limit`).

        `should_retry` adds ``Stripe-Should-Retry: true|false`` and `retry_after` adds
        ``Retry-After: <seconds>``; None leaves the header out.
        """
        headers = retry_headers(should_retry, retry_after)
        with self._lock:
            self._one_shots.append(_OneShot(path_prefix, method, count, status, headers))

    def reset_next(
        self, count: int, *, path_prefix: str = "/v1/", method: str | None = None
    ) -> None:
        """Close the connection without any response for the next `count` matching requests."""
        with self._lock:
            self._one_shots.append(_OneShot(path_prefix, method, count, None, {}))

    def rate_limit(
        self,
        per_second: float,
        *,
        path_prefix: str = "/v1/",
        burst: float | None = None,
        should_retry: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Token bucket for `path_prefix`: beyond `per_second` (burst default = rate) -> 429."""
        capacity = burst if burst is not None else max(1.0, per_second)
        headers = retry_headers(should_retry, retry_after)
        with self._lock:
            bucket = _Bucket(
                path_prefix, per_second, capacity, capacity, self._monotonic(), headers
            )
            self._buckets = [b for b in self._buckets if b.prefix != path_prefix] + [bucket]

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._latency.clear()
            self._one_shots.clear()
            self._buckets.clear()

    def decide(self, method: str, path: str) -> FaultDecision:
        """Consume one-shot faults and tokens for this request and say what to do."""
        with self._lock:
            latency = self._latency_for(path)
            for bucket in self._buckets:
                if path.startswith(bucket.prefix) and not self._take(bucket):
                    return FaultDecision(latency, rate_limited(bucket.headers))
            for shot in self._one_shots:
                if shot.remaining > 0 and path.startswith(shot.prefix):
                    if shot.method is not None and shot.method != method:
                        continue
                    shot.remaining -= 1
                    if shot.status is None:
                        return FaultDecision(latency, reset=True)
                    return FaultDecision(latency, _status_error(shot.status, shot.headers))
            self._one_shots = [s for s in self._one_shots if s.remaining > 0]
        return FaultDecision(latency)

    def _latency_for(self, path: str) -> float:
        best, seconds = -1, 0.0
        for prefix, value in self._latency.items():
            if path.startswith(prefix) and len(prefix) > best:
                best, seconds = len(prefix), value
        return seconds

    def _take(self, bucket: _Bucket) -> bool:
        now = self._monotonic()
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.last) * bucket.rate)
        bucket.last = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False


def _status_error(status: int, headers: dict[str, str]) -> ApiError:
    if status == 429:
        return rate_limited(headers)
    if status >= 500:
        return server_error("An injected error occurred in the emulator.", headers)
    return ApiError(status, f"Injected {status} error.", headers=headers)
