"""What every command shares: settings, logging, error mapping to exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from config import Settings, load_settings
from reconcile.errors import ReconcileError
from reconcile.logging import configure_logging

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CODES_HELP = """\b
Exit codes:
  0  in sync, or drift corrected
  1  failed; nothing was applied
  2  configuration or usage error
  3  drift found (dry run with --exit-code)
  4  another run holds the lock
  5  safety valve tripped (too many changes; nothing written)"""


def settings_for(*groups: str, env_file: Path | None = Path(".env")) -> Settings:
    """Load settings once, requiring the given groups; logging is set up from them."""
    required: Collection[str] = groups
    settings = load_settings(env_file=env_file, require=required)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a message on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ReconcileError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def stderr_progress() -> Callable[[str, int], None] | None:
    """A one-line progress counter on stderr when it is a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None

    def show(label: str, count: int) -> None:
        sys.stderr.write(f"\r  listing {label}: {count:>9,}")
        sys.stderr.flush()

    return show
