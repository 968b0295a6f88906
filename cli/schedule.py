"""`reconcile schedule`: run the reconciliation, the outbox drain and the retries on a clock."""

from __future__ import annotations

from collections.abc import Callable

import click
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from sqlalchemy import Engine

from cli.common import handle_errors, settings_for
from config import Settings
from reconcile.database import ensure_migrated, make_engine
from reconcile.errors import ConfigError, ReconcileError
from reconcile.jobs import reconcile_once
from reconcile.metrics import notify_counts, recording, retry_counts, run_counts
from reconcile.notify_jobs import Notifier
from reconcile.retries import retry_payments_once
from reconcile.scheduler import (
    ScheduledJob,
    build_scheduler,
    crontab_trigger,
    run_until_stopped,
)

DEFAULT_RETRIES_CRON = "0 10 * * *"  # daily, 10:00 UTC: a time when customers can react
# How late a missed run may still start (e.g. after the host slept); later ones are skipped.
RECONCILE_GRACE_S = 15 * 60
DRAIN_GRACE_S = 30
RETRIES_GRACE_S = 60 * 60


def _reconcile(settings: Settings) -> Callable[[], None]:
    def run() -> None:
        with recording(settings, "run") as batch:
            batch.report(run_counts(reconcile_once(settings, dry_run=False)))
    return run


def _drain(settings: Settings, notifier: Notifier, engine: Engine) -> Callable[[], None]:
    def run() -> None:
        with recording(settings, "notify") as batch:
            result = notifier.drain(engine)
            batch.report(notify_counts(result))
            if result.stopped:  # the backend refused our credentials: a failed run
                raise ReconcileError(f"notification backend stopped the drain: {result.stopped}")
    return run


def _retries(settings: Settings) -> Callable[[], None]:
    def run() -> None:
        with recording(settings, "retry-payments") as batch:
            batch.report(retry_counts(retry_payments_once(settings, dry_run=False)))
    return run


def plan_jobs(
    settings: Settings, *, engine: Engine, notifier: Notifier | None, retries_cron: str
) -> tuple[ScheduledJob, ...]:
    """The jobs these settings call for (raises ConfigError for an unusable cron)."""
    try:
        reconcile_trigger = crontab_trigger(settings.schedule_reconcile)
        retries_trigger = crontab_trigger(retries_cron)
    except ValueError as exc:
        raise ConfigError([f"schedule: {exc}"]) from exc
    jobs = [ScheduledJob("reconcile", reconcile_trigger, _reconcile(settings), RECONCILE_GRACE_S)]
    if notifier is not None:
        jobs.append(ScheduledJob("notify", IntervalTrigger(minutes=1),
                                 _drain(settings, notifier, engine), DRAIN_GRACE_S))
    if settings.retry_policy == "custom":
        jobs.append(ScheduledJob("retry-payments", retries_trigger, _retries(settings),
                                 RETRIES_GRACE_S))
    return tuple(jobs)


@click.command("schedule")
@click.option(
    "--retries-cron", default=DEFAULT_RETRIES_CRON, show_default=True,
    help="When retry-payments runs (cron, UTC); only with RETRY_POLICY=custom.",
)
@handle_errors
def schedule_command(retries_cron: str) -> None:
    """Run the jobs on their own clock, for hosts without cron or Kubernetes CronJobs.

    Reconciles on SCHEDULE_RECONCILE, drains the notification outbox every minute (when
    EMAIL_FROM is set) and, with RETRY_POLICY=custom, retries payments daily. Each job runs
    once at a time, guarded by a database lock, so two schedulers never overlap. SIGTERM
    stops it after the running jobs finish.
    """
    settings = settings_for("database", "stripe")
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=4)
    notifier = Notifier.from_settings(settings) if settings.email_from else None
    try:
        ensure_migrated(engine)
        jobs = plan_jobs(settings, engine=engine, notifier=notifier, retries_cron=retries_cron)
        run_until_stopped(build_scheduler(jobs, lock_engine=engine))
    finally:
        if notifier is not None:
            notifier.close()
        engine.dispose()
