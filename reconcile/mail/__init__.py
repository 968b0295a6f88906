"""E-mail for failed payments: rendering (our Jinja2 templates) and the mail backends.

Backends: SendGrid (production), the console and .eml files (development). They all take a
rendered `OutgoingEmail` and return the provider's message id or raise `SendError`.
"""

from reconcile.mail.message import OutgoingEmail, Sender, SendError, SenderUnusableError
from reconcile.mail.render import InvoiceFacts, RenderedEmail, Renderer

__all__ = [
    "InvoiceFacts",
    "OutgoingEmail",
    "RenderedEmail",
    "Renderer",
    "SendError",
    "Sender",
    "SenderUnusableError",
]
