"""`reconcile run` (and `reconcile --dry-run`): the reconciliation job."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from cli.common import EXIT_CODES_HELP, handle_errors, settings_for, stderr_progress
from reconcile.jobs import reconcile_once
from reconcile.metrics import recording, run_counts
from reconcile.report import render_json, render_text

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
    with recording(settings, "dry-run" if dry_run else "run") as batch:
        result = reconcile_once(
            settings, dry_run=dry_run, max_changes=max_changes, force=force,
            report_limit=report_limit, progress=stderr_progress(),
        )
        batch.report(run_counts(result))
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
