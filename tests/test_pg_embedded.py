"""The embedded PostgreSQL helper and the per-test database fixtures."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconcile.errors import DatabaseUnavailableError
from reconcile.pg_embedded import (
    EmbeddedPostgres,
    accepts_connections,
    default_runtime_parent,
    normalise_database_url,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _scalar(url: str, sql: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def _is_dead(pid: int) -> bool:
    # A killed server may linger as a zombie when its reaper is not our process.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _is_dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    """One throwaway server shared by the read-only checks below."""
    with EmbeddedPostgres() as pg:
        yield pg


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir the unprivileged server account can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="reconcile-pgtest-", dir=default_runtime_parent()))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_child(code: str) -> list[str]:
    """Run a Python snippet in a fresh interpreter and return its output lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout, result.stderr
    return result.stdout.split()


def test_server_answers_queries_with_expected_settings(server: EmbeddedPostgres) -> None:
    """A started server runs PostgreSQL in UTF8/C with the throwaway speed settings."""
    engine = sa.create_engine(server.url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT current_user, pg_encoding_to_char(encoding), datcollate, "
                    "current_setting('fsync'), current_setting('listen_addresses'), "
                    "current_setting('max_connections') "
                    "FROM pg_database WHERE datname = current_database()"
                )
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("postgres", "UTF8", "C", "off", "", "100")


def test_socket_dir_is_private(server: EmbeddedPostgres) -> None:
    """The socket directory and the data directory are mode 0700."""
    assert stat.S_IMODE(server.info.socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.info.data_dir.stat().st_mode) == 0o700


def test_server_process_is_not_root(server: EmbeddedPostgres) -> None:
    """The postmaster never runs as root (PostgreSQL refuses to)."""
    assert Path(f"/proc/{server.info.pid}").stat().st_uid != 0


def test_stop_removes_server_and_files() -> None:
    """After stop() the process is gone, the socket refuses and the temp files are deleted."""
    pg = EmbeddedPostgres()
    pg.start()
    info = pg.info
    assert accepts_connections(info.socket_dir)
    pg.stop()
    assert _is_dead(info.pid)
    assert not accepts_connections(info.socket_dir)
    assert not info.socket_dir.exists()
    with pytest.raises(RuntimeError):
        _ = pg.url


def test_persistent_mode_keeps_data_between_starts(shared_tmp: Path) -> None:
    """A persistent data dir is initialised once and its tables survive a restart."""
    data_dir = shared_tmp / "pgdata"
    with EmbeddedPostgres(data_dir, persistent=True) as pg:
        engine = sa.create_engine(pg.url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"))
        engine.dispose()
    assert (data_dir / "PG_VERSION").exists()
    with EmbeddedPostgres(data_dir, persistent=True) as pg:
        assert _scalar(pg.url, "SELECT v FROM kept") == "hello"


def test_throwaway_mode_refuses_non_empty_data_dir(shared_tmp: Path) -> None:
    """A throwaway server will not adopt (and later delete) a directory with content."""
    (shared_tmp / "precious.txt").write_text("keep me")
    with pytest.raises(DatabaseUnavailableError, match="not empty"):
        EmbeddedPostgres(shared_tmp).start()
    assert (shared_tmp / "precious.txt").exists()


def test_failed_start_raises_with_log_tail() -> None:
    """An invalid setting raises DatabaseUnavailableError naming the kept log and its tail."""
    pg = EmbeddedPostgres(settings={"shared_buffers": "lots"})
    with pytest.raises(DatabaseUnavailableError) as caught:
        pg.start()
    message = str(caught.value)
    found = re.search(r"last lines of (\S+server\.log)", message)
    assert found, message
    log = Path(found.group(1))
    try:
        assert log.exists()
        assert "shared_buffers" in message
        assert not (log.parent / "data").exists()
    finally:
        shutil.rmtree(log.parent, ignore_errors=True)


def test_server_dies_with_parent_killed_abruptly() -> None:
    """If the owning process is SIGKILLed, the kernel kills the server too."""
    pid, socket_dir = _run_child(
        """
        import os, signal
        from reconcile.pg_embedded import EmbeddedPostgres
        pg = EmbeddedPostgres()
        pg.start()
        print(pg.info.pid, pg.info.socket_dir, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    try:
        assert _wait_dead(int(pid))
        assert not accepts_connections(Path(socket_dir))
    finally:
        # Nothing could clean up after a SIGKILL; this is the one case that leaks files.
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_server_stops_at_interpreter_exit() -> None:
    """A server never stopped explicitly is stopped and cleaned up when Python exits."""
    pid, socket_dir = _run_child(
        """
        from reconcile.pg_embedded import EmbeddedPostgres
        pg = EmbeddedPostgres()
        pg.start()
        print(pg.info.pid, pg.info.socket_dir, flush=True)
        """
    )
    assert _wait_dead(int(pid))
    assert not Path(socket_dir).exists()


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@h:5433/db",
        "postgresql://u:p@h:5433/db",
        "postgresql+psycopg://u:p@h:5433/db",
    ],
)
def test_normalise_database_url_targets_psycopg(given: str) -> None:
    """Every accepted PostgreSQL URL spelling becomes a postgresql+psycopg:// URL."""
    assert normalise_database_url(given) == "postgresql+psycopg://u:p@h:5433/db"


def test_normalise_database_url_rejects_other_databases() -> None:
    """A non-PostgreSQL URL is refused instead of silently misused."""
    with pytest.raises(DatabaseUnavailableError):
        normalise_database_url("mysql://u@h/db")


def test_db_url_databases_are_isolated(db_url: str, clone_database: Callable[[], str]) -> None:
    """A write in one test database is invisible in another clone of the template."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE isolation_probe (v int); INSERT INTO isolation_probe VALUES (1)")
        )
    engine.dispose()
    other = clone_database()
    assert other != db_url
    assert _scalar(other, "SELECT to_regclass('isolation_probe') IS NULL") is True


def test_db_url_is_migrated(db_url: str) -> None:
    """The per-test database already has the Alembic schema applied."""
    assert _scalar(db_url, "SELECT count(*) FROM alembic_version") == 1


def test_engine_fixture_connects_to_db_url(engine: sa.Engine, db_url: str) -> None:
    """The engine fixture points at this test's private database."""
    with engine.connect() as conn:
        name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    assert name == sa.make_url(db_url).database


def test_hidden_install_is_copied_once_where_the_service_account_can_reach_it() -> None:
    """Binaries under a 0700 directory are copied to a world-readable cache, once."""
    from reconcile.pg_embedded import default_runtime_parent

    with tempfile.TemporaryDirectory(dir=default_runtime_parent()) as root:
        _check_copy(Path(root))


def _check_copy(tmp_path: Path) -> None:
    from reconcile.pg_embedded import service_bin_dir

    hidden = tmp_path / "private"
    for part in ("bin", "lib", "share"):
        (hidden / "pginstall" / part).mkdir(parents=True)
    (hidden / "pginstall" / "bin" / "postgres").write_text("#!/bin/sh\n")
    (hidden / "pginstall" / "lib" / "libpq.so").write_text("lib")
    hidden.chmod(0o700)
    cache = tmp_path / "cache"
    cache.mkdir()
    tmp_path.chmod(0o755)
    first = service_bin_dir(hidden / "pginstall" / "bin", cache)
    assert cache in first.parents
    assert (first.parent / "lib" / "libpq.so").read_text() == "lib"
    assert first.parent.stat().st_mode & 0o005 == 0o005
    assert service_bin_dir(hidden / "pginstall" / "bin", cache) == first
    assert len(list(cache.iterdir())) == 1
