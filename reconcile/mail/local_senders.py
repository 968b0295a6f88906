"""Development backends: log the rendered e-mail, or write it as an .eml file to open."""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import structlog

from reconcile.mail.message import OutgoingEmail, SendError

log = structlog.get_logger("reconcile.mail")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def mime_message(email: OutgoingEmail, sender: str, reply_to: str | None) -> EmailMessage:
    """The e-mail as a standard multipart/alternative message."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = email.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["X-Notification-Id"] = str(email.notification_id)
    message["X-Stripe-Invoice-Id"] = email.stripe_invoice_id
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class ConsoleSender:
    """Logs each e-mail (subject and text) instead of sending it."""

    name = "console"

    def __init__(self, sender: str, reply_to: str | None = None) -> None:
        self._sender = sender
        self._reply_to = reply_to

    def send(self, email: OutgoingEmail) -> str | None:
        """Log the e-mail; always succeeds."""
        log.info(
            "mail.console", notification_id=email.notification_id,
            invoice_id=email.stripe_invoice_id, kind=email.kind, to=email.to,
            sender=self._sender, subject=email.subject, text=email.text,
        )
        return f"console-{email.notification_id}"


class FileSender:
    """Writes each e-mail to `directory` as <id>-<kind>-<invoice>.eml (open it in a mail app)."""

    name = "file"

    def __init__(self, directory: Path, sender: str, reply_to: str | None = None) -> None:
        self._directory = directory
        self._sender = sender
        self._reply_to = reply_to

    def send(self, email: OutgoingEmail) -> str | None:
        """Write the file atomically; a full disk is worth retrying, so it is transient."""
        name = _UNSAFE.sub("_", f"{email.notification_id}-{email.kind}-{email.stripe_invoice_id}")
        target = self._directory / f"{name}.eml"
        partial = target.with_suffix(".eml.partial")
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(bytes(mime_message(email, self._sender, self._reply_to)))
            os.replace(partial, target)
        except OSError as exc:
            reason = f"cannot write {target}: {exc.strerror or exc}"
            raise SendError(reason, transient=True) from None
        return target.name
