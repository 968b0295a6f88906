"""What the notifier hands a mail backend, and how a backend says it could not send."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from reconcile.errors import ReconcileError


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One rendered e-mail for one outbox row.

    `data` are the template variables, for providers that render templates of their own.
    """

    notification_id: int
    stripe_invoice_id: str
    kind: str
    to: str
    subject: str
    text: str
    html: str
    data: Mapping[str, object]


class SendError(Exception):
    """The provider did not accept this e-mail; `transient` says whether to try again."""

    def __init__(self, reason: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.status = status


class SenderUnusableError(ReconcileError):
    """The backend refuses every e-mail (bad key, missing permission): stop, keep the rows.

    Marking rows failed for a configuration problem would lose every pending e-mail, so
    the drain stops instead, gives the attempt back and raises an alert.
    """

    exit_code = 1


class Sender(Protocol):
    """A mail backend: SendGrid, the console or .eml files."""

    @property
    def name(self) -> str:
        """Short backend name for logs."""
        ...

    def send(self, email: OutgoingEmail) -> str | None:
        """Deliver `email`; return the provider's message id, raise SendError otherwise."""
        ...
