"""`reconcile replay-events`: apply the events the receiver missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from cli.common import handle_errors, settings_for
from config.parsers import durations
from reconcile.database import ensure_migrated, make_engine
from reconcile.ledger import LedgerOptions
from reconcile.replay import MAX_WINDOW, render, replay_events
from reconcile.stripe_api import StripeGateway, make_client


def _window(ctx: click.Context, param: click.Parameter, raw: str) -> timedelta:
    try:
        parsed = durations(raw)
    except ValueError:
        parsed = ()
    if len(parsed) != 1:
        raise click.BadParameter("write a whole number followed by d, h or m, e.g. 3d or 12h")
    if parsed[0] > MAX_WINDOW:
        raise click.BadParameter("Stripe keeps events for 30 days; use at most 30d")
    return parsed[0]


@click.command("replay-events")
@click.option(
    "--since", "window", default="3d", show_default=True, callback=_window,
    help="How far back to list events: 12h, 3d, ... (at most 30d).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@handle_errors
def replay_command(window: timedelta, dry_run: bool) -> None:
    """Apply Stripe events that never reached the receiver, oldest first.

    Lists the handled event types from Stripe and feeds each event that is not yet in the
    ledger through the webhook's own path; recorded events are skipped, so it is safe to
    run at any time, and again.
    """
    settings = settings_for("database", "stripe")
    assert settings.database_url is not None and settings.stripe_api_key is not None
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        ensure_migrated(engine)
        client = make_client(
            settings.stripe_api_key.reveal(), settings.stripe_api_base,
            settings.stripe_max_network_retries,
        )
        gateway = StripeGateway(client, api_key_livemode=settings.stripe_livemode)
        options = LedgerOptions(
            refetch=settings.webhook_refetch, livemode=settings.stripe_livemode, source="replay",
            notify_max_age=timedelta(hours=settings.notify_max_age_hours),
        )
        report = replay_events(
            engine, gateway, since=datetime.now(UTC) - window, options=options, dry_run=dry_run
        )
    finally:
        engine.dispose()
    click.echo(render(report), nl=False)
