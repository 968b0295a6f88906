"""Whole jobs built from settings: what the CLI commands and the scheduler both run.

This is where settings become clients and engines; below it, everything takes its
dependencies as arguments.
"""

from __future__ import annotations

from datetime import timedelta

from config import Settings
from reconcile.database import ensure_migrated, make_engine
from reconcile.engine import Progress, RunOptions, RunResult, run_reconciliation
from reconcile.listing import Throttle
from reconcile.notify_jobs import drain_after_run
from reconcile.stripe_api import StripeGateway, make_client


def make_gateway(settings: Settings) -> StripeGateway:
    """The Stripe gateway for these settings (the key must be set)."""
    if settings.stripe_api_key is None:
        raise ValueError("settings were loaded without the 'stripe' group")
    client = make_client(
        settings.stripe_api_key.reveal(), settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    return StripeGateway(
        client, api_key_livemode=settings.stripe_livemode,
        max_attempts=settings.stripe_max_network_retries + 1,
        # Unpaced until Stripe says 429, then shared by every listing thread (AIMD).
        throttle=Throttle(), concurrency=settings.reconcile_concurrency,
    )


def reconcile_once(
    settings: Settings, *, dry_run: bool, max_changes: int | None = None, force: bool = False,
    report_limit: int = 1000, progress: Progress | None = None,
) -> RunResult:
    """One reconciliation run against the configured database and Stripe account."""
    if settings.database_url is None:
        raise ValueError("settings were loaded without the 'database' group")
    engine = make_engine(settings.database_url)
    try:
        ensure_migrated(engine)
        options = RunOptions(
            dry_run=dry_run,
            max_changes=settings.reconcile_max_changes if max_changes is None else max_changes,
            force=force,
            lookback_days=settings.reconcile_invoice_lookback_days,
            report_limit=report_limit,
            notify_max_age=timedelta(hours=settings.notify_max_age_hours),
        )
        result = run_reconciliation(engine, make_gateway(settings), options, progress=progress)
        if not dry_run:
            # Emails for failures this run revealed; skipped without EMAIL_FROM, never fatal.
            drain_after_run(settings, engine)
        return result
    finally:
        engine.dispose()
