"""Webhook endpoints, Stripe-compatible signatures and synchronous delivery over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


def sign_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value: ``t=<ts>,v1=<hmac-sha256 of "<ts>.<body>">``."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class WebhookEndpoint:
    """A registered receiver; `pending` holds ids of events not yet delivered to it."""

    id: str
    url: str
    secret: str
    enabled_events: tuple[str, ...]
    api_version: str | None
    created: int
    pending: list[str] = field(default_factory=list)

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to `event_type` (``*`` means everything)."""
        return "*" in self.enabled_events or event_type in self.enabled_events

    def to_json(self, *, with_secret: bool) -> Json:
        """The API view; like Stripe, the secret is only shown when the endpoint is created."""
        out: Json = {
            "id": self.id,
            "object": "webhook_endpoint",
            "api_version": self.api_version,
            "application": None,
            "created": self.created,
            "description": None,
            "enabled_events": list(self.enabled_events),
            "livemode": False,
            "metadata": {},
            "status": "enabled",
            "url": self.url,
        }
        if with_secret:
            out["secret"] = self.secret
        return out


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What happened when one event was POSTed to one endpoint."""

    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    status: int | None
    error: str | None
    duplicate: bool
    signature: str

    @property
    def ok(self) -> bool:
        """A 2xx answer, which is what Stripe counts as delivered."""
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Delivery:
    """One planned POST: which event goes to which endpoint with which body."""

    endpoint: WebhookEndpoint
    event_id: str
    event_type: str
    payload: bytes
    duplicate: bool


class WebhookRegistry:
    """The endpoints and their queues of undelivered events."""

    def __init__(self) -> None:
        self.endpoints: list[WebhookEndpoint] = []

    def add(
        self,
        endpoint_id: str,
        url: str,
        *,
        created: int,
        enabled_events: Sequence[str] = ("*",),
        api_version: str | None = None,
        secret: str | None = None,
    ) -> WebhookEndpoint:
        """Register an endpoint; a `whsec_` secret is generated unless given."""
        endpoint = WebhookEndpoint(
            id=endpoint_id,
            url=url,
            secret=secret or f"whsec_{secrets.token_hex(16)}",
            enabled_events=tuple(enabled_events),
            api_version=api_version,
            created=created,
        )
        self.endpoints.append(endpoint)
        return endpoint

    def enqueue(self, event_id: str, event_type: str) -> int:
        """Queue an event for every interested endpoint; returns how many (pending_webhooks)."""
        count = 0
        for endpoint in self.endpoints:
            if endpoint.wants(event_type):
                endpoint.pending.append(event_id)
                count += 1
        return count


def post_event(
    url: str, payload: bytes, signature: str, timeout: float
) -> tuple[int | None, str | None]:
    """POST one signed event; returns (status, error) and never raises for HTTP failures."""
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status), None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
