"""Our own templates: amounts per currency, dates, links, escaping and the subject line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconcile.mail.render import InvoiceFacts, Renderer

RETRY = datetime(2026, 12, 8, 15, 0, tzinfo=UTC)


def facts(**kw: object) -> InvoiceFacts:
    values: dict[str, object] = {
        "kind": "payment_failed", "stripe_invoice_id": "in_1", "status": "open",
        "amount_remaining": 1500, "currency": "usd", "product_name": "Pro",
        "next_payment_attempt": RETRY,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/in_1",
    }
    values.update(kw)
    return InvoiceFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1500, "usd", "$15.00"), (4999, "eur", "€49.99"), (1500, "jpy", "¥1,500")],
)
def test_payment_failed_renders_amount_product_retry_and_link(
    amount: int, currency: str, shown: str
) -> None:
    """USD, EUR and JPY amounts, the product, the retry date and the link in both bodies."""
    mail = Renderer().render(facts(amount_remaining=amount, currency=currency))
    assert mail.subject == f"Your payment of {shown} for Pro failed"
    for body in (mail.text, mail.html):
        assert shown in body and "Pro" in body
        assert "December 8, 2026" in body
        assert "https://invoice.stripe.com/i/acct_1/in_1" in body
    assert mail.data["currency"] == currency.upper()


def test_customer_controlled_text_is_escaped_in_html_only() -> None:
    """Markup in names is escaped in HTML, kept literal in text, and the subject is one line."""
    evil = 'Tom & Co <script>alert("x")</script>\nBcc: victim@example.com'
    mail = Renderer().render(facts(product_name=evil))
    assert "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html and "Tom &amp; Co" in mail.html
    assert 'Tom & Co <script>alert("x")</script>' in mail.text
    assert "\n" not in mail.subject and "\r" not in mail.subject


def test_only_https_links_become_buttons() -> None:
    """A javascript: or http link never reaches the e-mail; the reader is told to reply."""
    for url in ('javascript:alert(1)', "http://evil.example", None):
        mail = Renderer().render(facts(hosted_invoice_url=url))
        assert "href" not in mail.html
        assert "Reply to this e-mail" in mail.text
        assert mail.data["invoice_url"] is None


def test_without_product_or_retry_date_the_text_stays_clear() -> None:
    """No product name says 'your subscription'; no retry date, no retry sentence."""
    mail = Renderer().render(facts(product_name=None, next_payment_attempt=None))
    assert mail.subject == "Your payment of $15.00 failed"
    assert "your subscription" in mail.text and "try again" not in mail.text
    assert "\n\n\n" not in mail.text


def test_uncollectible_and_action_required_say_what_happened() -> None:
    """Each situation has its own subject: unpaid invoice, or confirm the payment."""
    unpaid = Renderer().render(facts(status="uncollectible", next_payment_attempt=None))
    assert unpaid.subject == "Your invoice of $15.00 for Pro is still unpaid"
    confirm = Renderer().render(facts(kind="action_required"))
    assert confirm.subject == "Please confirm your payment of $15.00 for Pro"
    assert "nothing needs replacing" in confirm.text
    assert "Confirm payment" in confirm.html


def test_alert_only_kinds_have_no_email() -> None:
    """Rendering an alert-only kind is a programming error."""
    with pytest.raises(ValueError):
        Renderer().render(facts(kind="subscription_canceled"))
