"""`reconcile demo`: the product end to end on local stand-ins for Stripe and PostgreSQL."""

from __future__ import annotations

import os

import click

from cli.common import handle_errors
from reconcile.demo import run_demo


@click.command("demo")
@handle_errors
def demo_command() -> None:
    """Show drift, corrections, e-mails and webhooks on a local PostgreSQL and Stripe emulator.

    Needs no settings, key or server and ignores any that are set. Keeps its files (the
    PostgreSQL data, the e-mails, a log) in $XDG_DATA_HOME/stripe-reconcile/demo, by default
    ~/.local/share/stripe-reconcile/demo; RECONCILE_DEMO_DIR moves them. Every run starts
    from a fresh database.
    """
    run_demo(os.environ, click.echo)
