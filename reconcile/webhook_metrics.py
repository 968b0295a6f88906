"""Prometheus metrics of the webhook receiver, on a registry the caller owns.

Under `reconcile serve --workers N` each worker is a process with its own counters; when a
multiprocess directory is given (prometheus_client's PROMETHEUS_MULTIPROC_DIR mode, which
the serve command sets up) `/metrics` aggregates every worker's files instead, so a scrape
sees the whole server whichever worker answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Processing takes single milliseconds; a re-fetch from Stripe takes hundreds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class WebhookMetrics:
    """The receiver's instruments; build with `create`."""

    registry: CollectorRegistry
    events: Counter
    rejections: Counter
    latency: Histogram
    database_errors: Counter
    refetches: Counter
    batch_size: Histogram
    multiprocess_dir: Path | None = None

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, *, multiprocess_dir: Path | None = None
    ) -> WebhookMetrics:
        """Register the instruments on `registry` (a fresh one when None)."""
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        return cls(
            registry=reg,
            events=Counter(
                "stripe_webhook_events",
                "Verified events received, by event type and outcome "
                "(applied, no_change, ignored, misrouted, duplicate, failed).",
                ["type", "outcome"],
                registry=reg,
            ),
            rejections=Counter(
                "stripe_webhook_rejections",
                "Requests refused before processing, by reason.",
                ["reason"],
                registry=reg,
            ),
            latency=Histogram(
                "stripe_webhook_processing_seconds",
                "Time from request received to response, for verified events.",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            database_errors=Counter(
                "stripe_webhook_database_errors",
                "Events that failed because the database could not be used.",
                registry=reg,
            ),
            refetches=Counter(
                "stripe_webhook_refetches",
                "Objects re-read from Stripe because the payload alone could not decide.",
                registry=reg,
            ),
            batch_size=Histogram(
                "stripe_webhook_batch_size",
                "Events written per transaction (events arriving together share one).",
                buckets=BATCH_BUCKETS,
                registry=reg,
            ),
            multiprocess_dir=multiprocess_dir,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
