"""`reconcile run` (and `reconcile --dry-run`): the reconciliation job."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from cli.common import EXIT_CODES_HELP, handle_errors, settings_for, stderr_progress
from reconcile.database import ensure_migrated, make_engine
from reconcile.engine import RunOptions, run_reconciliation
from reconcile.report import render_json, render_text
from reconcile.stripe_api import StripeGateway, make_client

DRIFT_EXIT = 3


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The run flags, shared by `reconcile run` and the bare `reconcile --dry-run`."""
    decorators = [
        click.option("--dry-run", is_flag=True, help="Report drift field by field; write nothing."),
        click.option(
            "--format", "fmt", type=click.Choice(["text", "json"]), default="text",
            show_default=True, help="Report format on stdout.",
        ),
        click.option(
            "--exit-code", is_flag=True,
            help="With --dry-run: exit 3 when drift exists (for monitoring).",
        ),
        click.option(
            "--max-changes", type=click.IntRange(min=0), default=None,
            help="Abort without writing when more rows would change "
            "[default: RECONCILE_MAX_CHANGES].",
        ),
        click.option("--force", is_flag=True, help="Apply even past --max-changes."),
        click.option(
            "--report-limit", type=click.IntRange(min=0), default=1000, show_default=True,
            help="Most drift entries to include in the report.",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


@handle_errors
def execute_run(
    *, dry_run: bool, fmt: str, exit_code: bool, max_changes: int | None, force: bool,
    report_limit: int,
) -> None:
    """Load settings, run once, print the report, exit with the documented code."""
    settings = settings_for("database", "stripe")
    assert settings.database_url is not None and settings.stripe_api_key is not None
    engine = make_engine(settings.database_url)
    try:
        ensure_migrated(engine)
        client = make_client(
            settings.stripe_api_key.reveal(), settings.stripe_api_base,
            settings.stripe_max_network_retries,
        )
        gateway = StripeGateway(
            client, api_key_livemode=settings.stripe_livemode,
            max_attempts=settings.stripe_max_network_retries + 1,
        )
        options = RunOptions(
            dry_run=dry_run,
            max_changes=settings.reconcile_max_changes if max_changes is None else max_changes,
            force=force,
            lookback_days=settings.reconcile_invoice_lookback_days,
            report_limit=report_limit,
        )
        result = run_reconciliation(engine, gateway, options, progress=stderr_progress())
    finally:
        engine.dispose()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    click.echo(render_json(result) if fmt == "json" else render_text(result), nl=False)
    if dry_run and exit_code and result.changed_rows > 0:
        sys.exit(DRIFT_EXIT)


@click.command("run", epilog=EXIT_CODES_HELP)
@run_options
def run_command(**kwargs: Any) -> None:
    """Reconcile Stripe into PostgreSQL: list, diff, correct, in one transaction."""
    execute_run(**kwargs)
