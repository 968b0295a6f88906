"""Operator alerts: error-level events, and the optional chat webhook (rate limited)."""

from __future__ import annotations

import json
import threading
import time

from structlog.testing import capture_logs

from config import Secret
from reconcile.alerts import Alerts, AlertWebhook, slack_text


class Posts:
    """Records what the webhook posted; can fail or block on demand."""

    def __init__(self, *, fail: bool = False, block: threading.Event | None = None) -> None:
        self.bodies: list[dict[str, object]] = []
        self.fail = fail
        self.block = block
        self.done = threading.Event()

    def __call__(self, url: str, body: bytes, timeout_s: float) -> int:
        if self.block is not None:
            self.block.wait(10)
        self.bodies.append(json.loads(body))
        self.done.set()
        if self.fail:
            raise OSError("connection refused")
        return 200


URL = Secret("https://hooks.example.com/services/T000/B000/" + "x" * 24)


def test_alert_is_an_error_event_with_its_fields() -> None:
    """emit() logs the alert at error level with ids, amounts and reason."""
    with capture_logs() as logs:
        Alerts().emit("alert.payment_failed", invoice_id="in_1", amount_due=1500,
                      currency="usd", reason="payment attempt failed")
    assert logs == [{"event": "alert.payment_failed", "log_level": "error",
                     "invoice_id": "in_1", "amount_due": 1500, "currency": "usd",
                     "reason": "payment attempt failed"}]


def test_webhook_failure_alert_for_the_receiver() -> None:
    """webhook_failed() is the receiver's one-liner for a failed event."""
    with capture_logs() as logs:
        Alerts().webhook_failed(event_id="evt_1", event_type="invoice.paid", error="boom")
    assert logs[0]["event"] == "alert.webhook_failed" and logs[0]["event_id"] == "evt_1"


def test_alerts_are_posted_as_slack_text() -> None:
    """With a webhook the same alert is posted as {"text": ...}."""
    posts = Posts()
    hook = AlertWebhook(URL, post=posts)
    Alerts(hook).emit("alert.email_failed", invoice_id="in_1", reason="HTTP 400")
    assert posts.done.wait(5)
    hook.close()
    assert posts.bodies == [{"text": ":rotating_light: alert.email_failed invoice_id=in_1 "
                                     "reason=HTTP 400"}]


def test_webhook_is_rate_limited_and_never_blocks() -> None:
    """Beyond the burst, alerts are dropped (still logged); a stuck post blocks nobody."""
    gate = threading.Event()
    posts = Posts(block=gate)
    hook = AlertWebhook(URL, post=posts, burst=3, per_minute=1, clock=lambda: 0.0)
    started = time.perf_counter()
    accepted = [hook.submit("alert.payment_failed", {"n": n}) for n in range(10)]
    assert time.perf_counter() - started < 0.5
    assert accepted == [True] * 3 + [False] * 7 and hook.dropped == 7
    gate.set()
    hook.close()
    assert len(posts.bodies) == 3


def test_failed_posts_are_logged_without_the_url() -> None:
    """A failing chat service is logged (type only, the URL is a secret) and not raised."""
    posts = Posts(fail=True)
    hook = AlertWebhook(URL, post=posts)
    with capture_logs() as logs:
        hook.submit("alert.payment_failed", {"invoice_id": "in_1"})
        assert posts.done.wait(5)
        hook.close()
    failed = [e for e in logs if e["event"] == "alert.webhook_post_failed"]
    assert failed and failed[0]["error"] == "OSError"
    assert URL.reveal() not in repr(logs)


def test_slack_text_redacts_secrets_and_skips_empty_fields() -> None:
    """Secrets that slip into a reason are masked; None fields are left out."""
    text = slack_text("alert.email_failed", {"reason": "key SG.abc.def refused", "x": None})
    assert "SG.abc.def" not in text and "x=" not in text
