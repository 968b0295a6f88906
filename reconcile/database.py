"""Engines and the schema check every command makes before it touches data."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError

from reconcile import staging
from reconcile.errors import DatabaseUnavailableError
from reconcile.migrate import head


def make_engine(database_url: str, *, pool_size: int = 5) -> Engine:
    """A pooled engine; connections are checked before use so a restarted server is fine."""
    # A bounded connect: an unreachable host must fail fast, not hang a webhook writer.
    engine = create_engine(
        database_url, pool_pre_ping=True, pool_size=pool_size,
        connect_args={"connect_timeout": 5},
    )
    staging.install(engine)
    return engine


def ensure_migrated(engine: Engine) -> None:
    """Fail with a clear hint when the database is unreachable or behind the code."""
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to the database: {str(exc.orig).strip()}",
            hint="check DATABASE_URL and that PostgreSQL is running",
        ) from exc
    expected = head()
    if current != expected:
        raise DatabaseUnavailableError(
            f"the database schema is at {current or 'no revision'}, this version needs "
            f"{expected}",
            hint="run `reconcile db upgrade`",
        )
