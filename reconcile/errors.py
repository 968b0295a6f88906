"""One exception root for the whole product.

Each error knows its CLI exit code and its HTTP status, so the CLI and the web app map
failures the same way without a table of their own.
"""

from __future__ import annotations

from collections.abc import Sequence


class ReconcileError(Exception):
    """Root of every error this product raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ReconcileError):
    """Settings are missing or invalid; carries every problem at once."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")

    def __str__(self) -> str:
        return self.message


class AccountMismatchError(ReconcileError):
    """The Stripe key belongs to another account or mode than the database remembers."""

    exit_code = 2


class StripeUnavailableError(ReconcileError):
    """Stripe could not be read completely (network, 5xx, rate limits exhausted)."""

    exit_code = 1
    http_status = 503


class StripeRequestError(ReconcileError):
    """Stripe refused a request for a reason retrying will not fix (4xx other than 429)."""

    exit_code = 1
    http_status = 502


class DatabaseUnavailableError(ReconcileError):
    """PostgreSQL is unreachable or not migrated."""

    exit_code = 1
    http_status = 503


class LockHeldError(ReconcileError):
    """Another reconciliation run holds the advisory lock."""

    exit_code = 4
    http_status = 409


class SafetyValveError(ReconcileError):
    """More rows would change than the configured maximum; nothing was written."""

    exit_code = 5
    http_status = 409
