"""Operator alerts: error-level structured log events, optionally posted to a chat webhook.

Every alert is first a log event (`alert.*`, level error) carrying ids, amounts and the
reason, never card data or secrets: route those events from your log pipeline. With
ALERT_WEBHOOK_URL set, the same alerts are also POSTed as JSON with a Slack-compatible
`text`, from a background thread behind a bounded queue and a rate limit, so a slow or
failing chat service never delays sending e-mails or answering Stripe.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import structlog

from config import Secret
from reconcile.logging import redact_text

log = structlog.get_logger("reconcile.alerts")

PAYMENT_FAILED: Final = "alert.payment_failed"
PAYMENT_ACTION_REQUIRED: Final = "alert.payment_action_required"
INVOICE_UNCOLLECTIBLE: Final = "alert.invoice_uncollectible"
SUBSCRIPTION_CANCELED: Final = "alert.subscription_canceled"
EMAIL_FAILED: Final = "alert.email_failed"
EMAIL_BACKEND_REFUSED: Final = "alert.email_backend_refused"
WEBHOOK_FAILED: Final = "alert.webhook_failed"
EVENTS: Final = (
    PAYMENT_FAILED, PAYMENT_ACTION_REQUIRED, INVOICE_UNCOLLECTIBLE, SUBSCRIPTION_CANCELED,
    EMAIL_FAILED, EMAIL_BACKEND_REFUSED, WEBHOOK_FAILED,
)

# Outbox kind -> (alert event, reason), for the rows the notifier picks up.
FOR_KIND: Final[Mapping[str, tuple[str, str]]] = MappingProxyType({
    "payment_failed": (PAYMENT_FAILED, "payment attempt failed"),
    "action_required": (PAYMENT_ACTION_REQUIRED, "customer must authenticate the payment"),
    "invoice_uncollectible": (INVOICE_UNCOLLECTIBLE, "invoice marked uncollectible"),
    "subscription_canceled": (SUBSCRIPTION_CANCELED, "subscription canceled, invoice unpaid"),
})

Poster = Callable[[str, bytes, float], int]
_STOP = object()


def post_json(url: str, body: bytes, timeout_s: float) -> int:
    """POST `body` as JSON; returns the HTTP status (urllib raises for 4xx/5xx)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return int(response.status)


def slack_text(event: str, fields: Mapping[str, object]) -> str:
    """One line a human can read in a channel: the event, then key=value pairs."""
    pairs = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    return redact_text(f":rotating_light: {event} {pairs}".strip())


class AlertWebhook:
    """Posts alerts from one daemon thread: rate limited (token bucket), never blocking.

    Alerts beyond the rate or the queue are dropped and counted (they are still logged).
    """

    def __init__(
        self, url: Secret, *, per_minute: float = 20.0, burst: int = 10, timeout_s: float = 5.0,
        queue_size: int = 100, post: Poster = post_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._tokens = float(burst)
        self._timeout_s = timeout_s
        self._post = post
        self._clock = clock
        self._last = clock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.posted = 0

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def submit(self, event: str, fields: Mapping[str, object]) -> bool:
        """Queue one alert for posting; False when it was dropped (rate or queue full)."""
        body = json.dumps({"text": slack_text(event, fields)}).encode()
        with self._lock:
            accepted = self._take_token()
            if accepted:
                try:
                    self._queue.put_nowait(body)
                except queue.Full:
                    accepted = False
            if not accepted:
                self.dropped += 1
            elif self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="alert-webhook", daemon=True
                )
                self._thread.start()
        if not accepted:
            log.warning("alert.webhook_dropped", alert=event, dropped=self.dropped)
        return accepted

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, bytes)
            try:
                status = self._post(self._url.reveal(), item, self._timeout_s)
                self.posted += 1
                if status >= 300:
                    log.warning("alert.webhook_post_failed", status=status)
            except Exception as exc:  # a chat outage must not kill the thread
                # The URL is a credential: only the error's type and status are logged.
                log.warning(
                    "alert.webhook_post_failed", error=type(exc).__name__,
                    status=getattr(exc, "code", None),
                )

    def close(self, timeout_s: float = 5.0) -> None:
        """Post what is queued (waiting at most `timeout_s`), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return
        thread.join(timeout_s)


class Alerts:
    """Where alerts go: the log always, the chat webhook when configured."""

    def __init__(self, webhook: AlertWebhook | None = None) -> None:
        self._webhook = webhook

    def emit(self, event: str, **fields: object) -> None:
        """Log `event` at error level with `fields`, and forward it to the webhook."""
        log.error(event, **fields)
        if self._webhook is not None:
            self._webhook.submit(event, fields)

    def webhook_failed(self, *, event_id: str, event_type: str, error: str) -> None:
        """A Stripe webhook event could not be processed (Stripe will redeliver it)."""
        self.emit(WEBHOOK_FAILED, event_id=event_id, event_type=event_type, reason=error)

    def close(self) -> None:
        """Flush the webhook queue, if any."""
        if self._webhook is not None:
            self._webhook.close()
