"""The `reconcile` command line: a thin shell over the `reconcile` library."""

from __future__ import annotations

from typing import Any

import click

from cli.common import EXIT_CODES_HELP
from cli.db import db_group
from cli.demo import demo_command
from cli.doctor import doctor_command
from cli.notify import notify_command, worker_command
from cli.replay import replay_command
from cli.retry import retry_command
from cli.run import execute_run, run_command, run_options
from cli.schedule import schedule_command
from cli.serve import serve_command


@click.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
@run_options
@click.pass_context
def main(ctx: click.Context, /, **kwargs: Any) -> None:
    """Keep PostgreSQL in step with Stripe.

    `reconcile --dry-run` shows the drift; `reconcile run` corrects it.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not kwargs["dry_run"]:
        click.echo(ctx.get_help())
        ctx.exit(0)
    execute_run(**kwargs)


for command in (
    run_command, db_group, serve_command, replay_command, notify_command, worker_command,
    retry_command, schedule_command, doctor_command, demo_command,
):
    main.add_command(command)
