"""Mail backends: SendGrid's request and error mapping, .eml files, the console."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from types import MappingProxyType

import pytest
from structlog.testing import capture_logs

from config import Secret
from reconcile.mail.local_senders import ConsoleSender, FileSender
from reconcile.mail.message import OutgoingEmail, SendError, SenderUnusableError
from reconcile.mail.sendgrid_sender import SendGridConfig, request_body
from tests.fake_sendgrid import fake_sendgrid
from tests.notify_support import SENDGRID_KEY, sendgrid_sender

MAIL = OutgoingEmail(
    notification_id=7, stripe_invoice_id="in_1", kind="payment_failed",
    to="customer@example.com", subject="Your payment of $15.00 failed",
    text="plain body\n", html="<p>html body</p>", data=MappingProxyType({"amount": "$15.00"}),
)


def test_request_body_with_our_content() -> None:
    """Subject and text-before-HTML content, ids as custom_args, kind as category."""
    config = SendGridConfig(api_key=Secret(SENDGRID_KEY), sender="billing@example.com",
                            reply_to="help@example.com")
    body = request_body(config, MAIL)
    assert body["subject"] == MAIL.subject
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["custom_args"] == {"notification_id": "7", "stripe_invoice_id": "in_1"}
    assert body["categories"] == ["payment_failed"]
    assert body["reply_to"] == {"email": "help@example.com"}
    assert "mail_settings" not in body and "template_id" not in body


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (500, True), (502, True), (400, False), (413, False)]
)
def test_http_errors_are_sorted_by_what_retrying_can_do(status: int, transient: bool) -> None:
    """429 and 5xx are transient, other 4xx permanent; the status is kept for the alert."""
    with fake_sendgrid() as fake:
        fake.answer(status)
        with pytest.raises(SendError) as caught:
            sendgrid_sender(fake.url).send(MAIL)
    assert (caught.value.transient, caught.value.status) == (transient, status)
    assert caught.value.reason == f"HTTP {status}: scripted {status}"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_make_the_backend_unusable(status: int) -> None:
    """401/403 is about our key, not this e-mail: SenderUnusableError, key never shown."""
    with fake_sendgrid() as fake:
        fake.answer(status)
        with pytest.raises(SenderUnusableError) as caught:
            sendgrid_sender(fake.url).send(MAIL)
    assert SENDGRID_KEY not in str(caught.value)


def test_a_slow_sendgrid_times_out_as_a_transient_error() -> None:
    """The client's timeout (the library has none by default) turns a hang into a retry."""
    with fake_sendgrid() as fake:
        fake.hold()
        with pytest.raises(SendError) as caught:
            sendgrid_sender(fake.url, timeout_s=0.3).send(MAIL)
    assert caught.value.transient and caught.value.reason.startswith("network error")


def test_file_backend_writes_a_readable_eml(tmp_path: Path) -> None:
    """EMAIL_BACKEND=file writes a multipart .eml a mail program can open."""
    sender = FileSender(tmp_path / "mail", "billing@example.com", "help@example.com")
    name = sender.send(MAIL)
    assert name == "7-payment_failed-in_1.eml"
    parsed = email.message_from_bytes((tmp_path / "mail" / name).read_bytes(),
                                      policy=policy.default)
    assert parsed["Subject"] == MAIL.subject and parsed["To"] == MAIL.to
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed.get_body(("plain",)).get_content() == "plain body\n"  # type: ignore[union-attr]
    assert "html body" in parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert list((tmp_path / "mail").glob("*.partial")) == []


def test_file_backend_unwritable_directory_is_transient(tmp_path: Path) -> None:
    """A directory that cannot be created is retried later, not failed."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SendError) as caught:
        FileSender(blocker / "mail", "billing@example.com").send(MAIL)
    assert caught.value.transient


def test_console_backend_logs_the_email() -> None:
    """EMAIL_BACKEND=console logs the rendered e-mail instead of sending it."""
    with capture_logs() as logs:
        ConsoleSender("billing@example.com").send(MAIL)
    [entry] = logs
    assert entry["event"] == "mail.console" and entry["subject"] == MAIL.subject
    assert entry["text"] == MAIL.text and entry["invoice_id"] == "in_1"
