"""Our own e-mail templates (Jinja2, HTML and plain text) for failed payments.

HTML is autoescaped; the plain-text part and the subject are not HTML, so they are
rendered without escaping and the subject is folded onto one line (no header injection).
Links are only ever Stripe's https invoice pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from reconcile.money import format_amount
from reconcile.notify_policy import EMAIL_KINDS

_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """What an e-mail says, read from the invoice as it stands when the e-mail is sent."""

    kind: str
    stripe_invoice_id: str
    status: str
    amount_remaining: int
    currency: str
    product_name: str | None
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """Subject, both bodies, and the variables they were rendered from."""

    subject: str
    text: str
    html: str
    data: MappingProxyType[str, Any]


def format_date(value: datetime) -> str:
    """A date people read the same everywhere: "December 8, 2026" (UTC)."""
    day = value.astimezone(UTC)
    return f"{day:%B} {day.day}, {day.year}"


def safe_link(url: str | None) -> str | None:
    """Only https links reach an e-mail: a `javascript:` URL must never become a button."""
    return url if url is not None and url.startswith("https://") else None


def template_data(facts: InvoiceFacts) -> dict[str, Any]:
    """The variables of both our templates and SendGrid dynamic templates (see README)."""
    return {
        "kind": facts.kind,
        "invoice_id": facts.stripe_invoice_id,
        "amount": format_amount(facts.amount_remaining, facts.currency),
        "currency": facts.currency.upper(),
        "product_name": facts.product_name,
        "next_retry_date": (
            format_date(facts.next_payment_attempt) if facts.next_payment_attempt else None
        ),
        "invoice_url": safe_link(facts.hosted_invoice_url),
        "uncollectible": facts.status == "uncollectible",
    }


class Renderer:
    """Renders the e-mail of an outbox row; build one and reuse it (templates are cached)."""

    def __init__(self) -> None:
        self._html = Environment(
            loader=PackageLoader("reconcile.mail", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Plain text must not be HTML-escaped ("Tom & Co" stays as written).
        self._text = self._html.overlay(autoescape=False)

    def render(self, facts: InvoiceFacts) -> RenderedEmail:
        """Subject, text and HTML for `facts.kind` (one of EMAIL_KINDS)."""
        if facts.kind not in EMAIL_KINDS:
            raise ValueError(f"no e-mail template for kind {facts.kind!r}")
        data = template_data(facts)
        subject = self._text.get_template(f"{facts.kind}.subject.txt").render(data)
        text = self._text.get_template(f"{facts.kind}.txt").render(data)
        return RenderedEmail(
            subject=_WHITESPACE.sub(" ", subject).strip(),
            text=_BLANK_LINES.sub("\n\n", text.strip()) + "\n",
            html=self._html.get_template(f"{facts.kind}.html").render(data),
            data=MappingProxyType(data),
        )
