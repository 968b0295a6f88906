"""SendGrid's v3 Mail Send through the official client, with a timeout it lacks by default.

Each request carries the notification and invoice ids as `custom_args` (they come back in
SendGrid's event webhook and activity feed) and the kind as a category. Failures are sorted
by what retrying can do: network errors, 429 and 5xx are transient; 401/403 mean the key
itself is refused (SenderUnusableError); any other 4xx is permanent for this e-mail.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import python_http_client  # type: ignore[import-untyped]
from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]

from config import Secret
from reconcile.mail.message import OutgoingEmail, SendError, SenderUnusableError

DEFAULT_TIMEOUT_S = 10.0
_REASON_LIMIT = 300


@dataclass(frozen=True, slots=True)
class SendGridConfig:
    """Everything the SendGrid backend needs; `template_ids` maps kind -> dynamic template."""

    api_key: Secret
    sender: str
    reply_to: str | None = None
    api_base: str = "https://api.sendgrid.com"
    template_ids: tuple[tuple[str, str], ...] = ()
    sandbox: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


def request_body(config: SendGridConfig, email: OutgoingEmail) -> dict[str, Any]:
    """The v3 /mail/send JSON for `email` (pure, so tests can check it without HTTP)."""
    template_id = dict(config.template_ids).get(email.kind)
    personalization: dict[str, Any] = {"to": [{"email": email.to}]}
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": {"email": config.sender},
        "custom_args": {
            "notification_id": str(email.notification_id),
            "stripe_invoice_id": email.stripe_invoice_id,
        },
        "categories": [email.kind],
    }
    if template_id:
        body["template_id"] = template_id
        personalization["dynamic_template_data"] = dict(email.data)
    else:
        body["subject"] = email.subject
        # SendGrid requires text/plain before text/html.
        body["content"] = [
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": email.html},
        ]
    if config.reply_to:
        body["reply_to"] = {"email": config.reply_to}
    if config.sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


def _reason(status: int, raw: Any) -> str:
    # SendGrid explains itself as {"errors": [{"message": ..., "field": ...}]}.
    try:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        messages = [str(e.get("message")) for e in json.loads(text).get("errors", [])]
        detail = "; ".join(m for m in messages if m) or text
    except (ValueError, AttributeError):
        detail = text
    return f"HTTP {status}: {detail}"[:_REASON_LIMIT]


def classify(exc: BaseException) -> SendError | SenderUnusableError:
    """Map what the client raised to a retry decision."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, python_http_client.exceptions.HTTPError) and isinstance(status, int):
        reason = _reason(status, getattr(exc, "body", b""))
        if status in (401, 403):
            return SenderUnusableError(
                f"SendGrid refused the API key ({reason})",
                hint="check SENDGRID_API_KEY and that it has the Mail Send permission",
            )
        transient = status == 429 or status >= 500
        return SendError(reason, transient=transient, status=status)
    # urllib's URLError and socket timeouts are OSErrors; a dropped connection may surface
    # as an http.client error. Either way the request may be retried.
    return SendError(f"network error: {type(exc).__name__}: {exc}"[:_REASON_LIMIT], transient=True)


class SendGridSender:
    """Sends through SendGrid; safe to share between threads (one request per call)."""

    name = "sendgrid"

    def __init__(self, config: SendGridConfig) -> None:
        self._config = config
        self._client = SendGridAPIClient(config.api_key.reveal(), host=config.api_base)
        # python_http_client builds a client per call from this one, copying the timeout.
        self._client.client.timeout = config.timeout_s

    def send(self, email: OutgoingEmail) -> str | None:
        """POST /v3/mail/send; return SendGrid's X-Message-Id."""
        try:
            response = self._client.send(request_body(self._config, email))
        except (python_http_client.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            raise classify(exc) from None
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        return str(message_id) if message_id else None
