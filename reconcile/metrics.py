"""Batch metrics: what each `run`, `notify` and `retry-payments` did, for Prometheus.

A batch job has no endpoint to scrape, so each run *publishes* its figures: pushed to a
Pushgateway (group `job="stripe_reconcile", command="<command>"`) and/or merged into the
node_exporter textfile (`command` label). Every series is a gauge describing the last run.
A successful run replaces its whole group; a failed one replaces only what it knows (success,
duration, time), so `..._last_success_timestamp_seconds` keeps the last good run for alerts.
A run that found another holding the lock publishes nothing (on a second scheduler host that
is normal, not a failure). Publishing never fails the job: errors are logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Gauge

from config import Settings
from reconcile.engine import RunResult
from reconcile.errors import LockHeldError
from reconcile.metrics_sink import publish
from reconcile.retries import RetryResult
from reconcile.retry_policy import MADE_OUTCOMES

log = structlog.get_logger("reconcile.metrics")

PREFIX = "reconcile_batch_"
EMAIL_OUTCOMES = ("sent", "failed", "retrying", "suppressed", "canceled")


class DrainLike(Protocol):
    """What `reconcile.notify.drain` reports (its DrainResult)."""

    @property
    def sent(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retrying(self) -> int: ...
    @property
    def suppressed(self) -> int: ...
    @property
    def canceled(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Counts:
    """What one batch saw and did; None means "not applicable to this command"."""

    objects_listed: int | None = None
    stripe_requests: int | None = None
    rate_limited: int | None = None
    changed_rows: int | None = None
    drift: Mapping[str, int] | None = None
    corrections: Mapping[str, int] | None = None
    emails: Mapping[str, int] | None = None
    charge_candidates: int | None = None
    charges: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class BatchFigures:
    """One published report: the command, how it ended, when, and its counts."""

    command: str
    succeeded: bool
    duration_s: float
    finished_at: float  # Unix time
    counts: Counts = field(default_factory=Counts)


def run_counts(result: RunResult) -> Counts:
    """Counts of a reconciliation run."""
    applied = result.applied
    return Counts(
        objects_listed=result.objects_listed, stripe_requests=result.stripe_requests,
        rate_limited=result.rate_limited, changed_rows=result.changed_rows,
        drift=dict(result.counts),
        corrections={f.name: int(getattr(applied, f.name)) for f in fields(applied)},
    )


def retry_counts(result: RetryResult) -> Counts:
    """Counts of a retry-payments run; every outcome is present, zero or not."""
    outcomes = {o: 0 for o in (*MADE_OUTCOMES, "would_charge")} | result.outcomes
    return Counts(
        stripe_requests=result.stripe_requests, rate_limited=result.rate_limited,
        charge_candidates=result.candidates, charges=outcomes,
    )


def notify_counts(result: DrainLike) -> Counts:
    """Counts of an outbox drain."""
    return Counts(emails={o: int(getattr(result, o)) for o in EMAIL_OUTCOMES})


def build_registry(
    figures: BatchFigures, registry: CollectorRegistry | None = None
) -> CollectorRegistry:
    """The figures as gauges on `registry` (a fresh one by default); no `command` label."""
    reg = registry if registry is not None else CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            Gauge(PREFIX + name, doc, registry=reg).set(value)

    def labelled(name: str, doc: str, label: str, values: Mapping[str, int] | None) -> None:
        if values is not None:
            metric = Gauge(PREFIX + name, doc, [label], registry=reg)
            for key, value in sorted(values.items()):
                metric.labels(key).set(value)

    c = figures.counts
    gauge("success", "1 if the last run succeeded, 0 if it failed.", int(figures.succeeded))
    gauge("duration_seconds", "Duration of the last run.", figures.duration_s)
    gauge("last_run_timestamp_seconds", "When the last run finished.", figures.finished_at)
    if figures.succeeded:
        gauge("last_success_timestamp_seconds", "When the last successful run finished.",
              figures.finished_at)
    gauge("objects_listed", "Stripe objects listed by the last run.", c.objects_listed)
    gauge("stripe_requests", "Stripe API requests made by the last run.", c.stripe_requests)
    gauge("stripe_rate_limited", "Stripe 429 answers the last run received.", c.rate_limited)
    gauge("changed_rows", "Rows the last run found out of step (and corrected unless dry).",
          c.changed_rows)
    labelled("drift", "Drift entries found by the last run, by kind.", "kind", c.drift)
    labelled("corrections", "Rows the last run wrote, by change.", "change", c.corrections)
    labelled("emails", "Outbox notifications handled by the last run, by outcome.", "outcome",
             c.emails)
    gauge("charge_candidates", "Invoices the last retry run considered.", c.charge_candidates)
    labelled("charges", "Charges attempted by the last retry run, by outcome.", "outcome",
             c.charges)
    return reg


def publish_settings(figures: BatchFigures, settings: Settings) -> None:
    """Publish to wherever the settings say (nowhere when neither is set)."""
    publish(
        build_registry(figures), figures.command, succeeded=figures.succeeded,
        pushgateway_url=settings.prometheus_pushgateway_url, textfile=settings.metrics_textfile,
    )


class Batch:
    """Handed out by `recording`; the job reports its counts on it before the block ends."""

    def __init__(self) -> None:
        self.counts = Counts()

    def report(self, counts: Counts) -> None:
        """Set what the run saw and did (call once, on success)."""
        self.counts = counts


@contextmanager
def recording(
    settings: Settings, command: str, *, clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    sink: Callable[[BatchFigures, Settings], None] = publish_settings,
) -> Iterator[Batch]:
    """Time the block and publish its figures, failed or not (but not when locked out)."""
    batch = Batch()
    started = monotonic()
    try:
        yield batch
    except LockHeldError:
        raise
    except BaseException:
        sink(BatchFigures(command, False, round(monotonic() - started, 3), clock()), settings)
        raise
    sink(BatchFigures(command, True, round(monotonic() - started, 3), clock(), batch.counts),
         settings)


def record_run(result: RunResult, settings: Settings, *, clock: Callable[[], float] = time.time
               ) -> None:
    """Publish a finished `reconcile run` (command `run`, or `dry-run` for a dry run)."""
    command = "dry-run" if result.dry_run else "run"
    publish_settings(
        BatchFigures(command, True, result.duration_s, clock(), run_counts(result)), settings
    )
