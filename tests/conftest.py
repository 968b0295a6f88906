"""Shared fixtures. Database tests always run against a real PostgreSQL, never skipped.

The server is ``TEST_DATABASE_URL`` when set, else an embedded one started once per
session. Migrations run once into a per-session template database; each test gets a
cheap clone of it (``CREATE DATABASE ... TEMPLATE``), dropped when the test ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from reconcile.errors import DatabaseUnavailableError
from reconcile.pg_embedded import EmbeddedPostgres, normalise_database_url

# `emu` and `client`: a started emulator and the SDK pointed at it.
pytest_plugins = ["tests.emulator_fixtures"]


def _database_url(server_url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def _unique_name(prefix: str) -> str:
    # Unique per call, so parallel sessions (xdist workers, two CI jobs) sharing one
    # TEST_DATABASE_URL server never touch each other's databases.
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        # FORCE terminates connections a test forgot to close (PostgreSQL 13+).
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL server on which the tests may create databases."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield normalise_database_url(external)
        return
    with EmbeddedPostgres() as server:
        yield server.url


@pytest.fixture(scope="session")
def pg_admin_engine(pg_server_url: str) -> Iterator[Engine]:
    """Engine on the server's own database, in AUTOCOMMIT for CREATE/DROP DATABASE."""
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        shown = make_url(pg_server_url).render_as_string(hide_password=True)
        raise DatabaseUnavailableError(
            f"cannot reach the test PostgreSQL at {shown}: {exc.orig}",
            hint="fix or unset TEST_DATABASE_URL (unset = embedded server)",
        ) from exc
    yield admin
    admin.dispose()


@pytest.fixture(scope="session")
def pg_template_db(pg_admin_engine: Engine, pg_server_url: str) -> Iterator[str]:
    """Name of a fully migrated database that the per-test databases are cloned from."""
    # Imported here so tests that need no database don't depend on the migrations.
    from reconcile.migrate import upgrade

    name = _unique_name("reconcile_tmpl")
    with pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(_database_url(pg_server_url, name))
        with pg_admin_engine.connect() as conn:
            # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the
            # template; lock connections out, then end any the migration left open.
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        yield name
    finally:
        _drop_database(pg_admin_engine, name)


@pytest.fixture
def clone_database(
    pg_admin_engine: Engine, pg_template_db: str, pg_server_url: str
) -> Iterator[Callable[[], str]]:
    """Factory: each call creates one more migrated database and returns its URL."""
    created: list[str] = []

    def clone() -> str:
        name = _unique_name("reconcile_test")
        with pg_admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template_db}"'))
        created.append(name)
        return _database_url(pg_server_url, name)

    yield clone
    for name in created:
        _drop_database(pg_admin_engine, name)


@pytest.fixture
def db_url(clone_database: Callable[[], str]) -> str:
    """SQLAlchemy URL of a freshly migrated database private to this test."""
    return clone_database()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Engine on this test's private database; disposed when the test ends."""
    eng = sa.create_engine(db_url)
    yield eng
    eng.dispose()
