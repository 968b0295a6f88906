"""Schema migrations through Alembic, configured in code (no alembic.ini to ship)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import OperationalError

from reconcile.errors import DatabaseUnavailableError

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert found is not None
    return found


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: the newest)."""
    try:
        command.upgrade(alembic_config(database_url), revision)
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot migrate the database: {exc.orig}", hint="check DATABASE_URL"
        ) from exc


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the database back to `revision` (for rollbacks of a release)."""
    try:
        command.downgrade(alembic_config(database_url), revision)
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot migrate the database: {exc.orig}", hint="check DATABASE_URL"
        ) from exc


def current(database_url: str) -> str | None:
    """The revision the database is at, None when never migrated."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot read the schema revision: {exc.orig}", hint="check DATABASE_URL"
        ) from exc
    finally:
        engine.dispose()
