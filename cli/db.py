"""`reconcile db ...`: schema migrations."""

from __future__ import annotations

import click

from cli.common import handle_errors, settings_for
from reconcile import migrate


@click.group("db")
def db_group() -> None:
    """Database schema: migrate and inspect."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handle_errors
def upgrade_command(revision: str) -> None:
    """Migrate the database schema (safe to run on every deploy)."""
    settings = settings_for("database")
    assert settings.database_url is not None
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url)}")


@db_group.command("current")
@handle_errors
def current_command() -> None:
    """Print the schema revision of the database and the one this version needs."""
    settings = settings_for("database")
    assert settings.database_url is not None
    found = migrate.current(settings.database_url)
    click.echo(f"current: {found or 'none'}\nhead:    {migrate.head()}")


@db_group.command("downgrade")
@click.argument("revision")
@handle_errors
def downgrade_command(revision: str) -> None:
    """Migrate the schema back to REVISION (before rolling back to an older release)."""
    settings = settings_for("database")
    assert settings.database_url is not None
    migrate.downgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url) or 'none'}")
