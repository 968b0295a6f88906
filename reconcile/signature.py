"""Stripe-Signature verification over the raw request body.  [pure]

Stripe signs "<t>.<raw body>" with HMAC-SHA256 keyed by the whole `whsec_...` string and sends
`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`. While a secret is being rolled,
Stripe sends one v1 per live secret and we may hold several: any (secret, v1) pair that
matches is enough. The timestamp is covered by the MAC, so bounding its age bounds how long a
captured request can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

DEFAULT_TOLERANCE = 300
# A real header is ~80 characters per signature; anything far longer is not from Stripe, and
# bounding it bounds the work an unauthenticated caller can make us do.
MAX_HEADER_CHARS = 2048
_MAX_SIGNATURES = 8
_HEX_DIGEST_LEN = 64


class SignatureError(ValueError):
    """A request whose signature does not prove it came from Stripe.

    `reason` is a short stable label (for metrics and logs), the message one line for the caller.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_header(header: str) -> tuple[int, tuple[str, ...]]:
    """The timestamp and the v1 signatures of a Stripe-Signature header value."""
    if len(header) > MAX_HEADER_CHARS:
        raise SignatureError("malformed_signature", "Stripe-Signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue  # Stripe may add schemes we do not know; only t and v1 matter
        if key == "t":
            if not value.isascii() or not value.isdigit():
                raise SignatureError(
                    "malformed_signature", "Stripe-Signature timestamp is not a number"
                )
            timestamp = int(value)
        elif key == "v1" and len(signatures) < _MAX_SIGNATURES:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("malformed_signature", "Stripe-Signature header has no timestamp")
    if not signatures:
        raise SignatureError("malformed_signature", "Stripe-Signature header has no v1 signature")
    return timestamp, tuple(signatures)


def expected_signature(body: bytes, secret: bytes, timestamp: int) -> str:
    """The hex v1 signature Stripe computes for `body` at `timestamp` with `secret`."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> int:
    """Check `header` against `body` for any of `secrets`; return the signed timestamp.

    Raises SignatureError. `tolerance` must be positive: a zero tolerance would accept a
    captured request forever in libraries that treat 0 as "don't check".
    """
    if tolerance <= 0:
        raise ValueError("the signature tolerance must be positive")
    if not secrets:
        raise ValueError("at least one webhook secret is needed")
    if not header:
        raise SignatureError("missing_signature", "missing Stripe-Signature header")
    timestamp, given = parse_header(header)
    # Signature first, as Stripe's libraries do: a valid but old signature then says "stale",
    # which points an operator at clock skew or a replay rather than at the secret.
    matched = False
    for secret in secrets:
        expected = expected_signature(body, secret, timestamp)
        for candidate in given:
            # Every pair is compared (no early exit) so timing reveals nothing about which
            # secret or position matched.
            # compare_digest refuses non-ASCII str; such a value cannot be a hex digest anyway.
            if len(candidate) == _HEX_DIGEST_LEN and candidate.isascii():
                matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(
            "bad_signature", "no Stripe-Signature v1 signature matches a configured secret"
        )
    # Both directions: a timestamp far in the future is as suspect as one far in the past.
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "stale_timestamp",
            f"Stripe-Signature timestamp is {int(now - timestamp)} s from now "
            f"(tolerance {tolerance} s)",
        )
    return timestamp
