"""Stripe-Signature verification, checked against headers made by Stripe's own library."""

from __future__ import annotations

import time

import pytest
import stripe

from reconcile.signature import MAX_HEADER_CHARS, SignatureError, parse_header, verify

SECRET = "whsec_test_signature_secret_000000"
OTHER = "whsec_test_another_secret_11111111"
BODY = b'{"id": "evt_1", "object": "event"}'
NOW = 1_780_000_000


def header(body: bytes = BODY, secret: str = SECRET, ts: int = NOW) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts))


def reason(body: bytes, value: str | None, *, secrets: tuple[str, ...] = (SECRET,),
           now: float = NOW) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(body, value, [s.encode() for s in secrets], now=now)
    assert "\n" not in str(caught.value)
    return caught.value.reason


def test_valid_header_returns_its_timestamp() -> None:
    """A header Stripe's library made for the body and secret verifies."""
    assert verify(BODY, header(), [SECRET.encode()], now=NOW + 5) == NOW


def test_agrees_with_stripe_library() -> None:
    """What we accept Stripe's own verifier accepts too, with the default 300 s tolerance."""
    now = int(time.time())
    value = header(ts=now)
    assert verify(BODY, value, [SECRET.encode()], now=now) == now
    assert stripe.WebhookSignature.verify_header(BODY, value, SECRET, 300)


def test_any_configured_secret_may_match() -> None:
    """While a secret is rolled, a body signed with either configured secret verifies."""
    both = [OTHER.encode(), SECRET.encode()]
    assert verify(BODY, header(secret=SECRET), both, now=NOW) == NOW
    assert verify(BODY, header(secret=OTHER), both, now=NOW) == NOW


def test_any_of_several_v1_signatures_may_match() -> None:
    """Stripe sends one v1 per live secret; one matching is enough, v0 is ignored."""
    ours = header().split("v1=")[1]
    value = f"t={NOW},v1={'0' * 64},v1={ours},v0=deadbeef"
    assert verify(BODY, value, [SECRET.encode()], now=NOW) == NOW


def test_missing_header_is_refused() -> None:
    """No header, or an empty one, is 'missing_signature'."""
    assert reason(BODY, None) == "missing_signature"
    assert reason(BODY, "") == "missing_signature"


@pytest.mark.parametrize(
    "value",
    ["garbage", f"v1={'a' * 64}", f"t={NOW}", f"t=12a,v1={'a' * 64}", f"t=-5,v1={'a' * 64}",
     "t=" + "1" * MAX_HEADER_CHARS],
)
def test_malformed_header_is_refused(value: str) -> None:
    """A header without a numeric timestamp or a v1 signature is 'malformed_signature'."""
    assert reason(BODY, value) == "malformed_signature"


def test_wrong_secret_or_tampered_body_is_refused() -> None:
    """A signature by another secret, or over other bytes, is 'bad_signature'."""
    assert reason(BODY, header(secret=OTHER)) == "bad_signature"
    assert reason(BODY + b" ", header()) == "bad_signature"
    assert reason(BODY, header().replace(f"t={NOW}", f"t={NOW + 1}")) == "bad_signature"


def test_non_ascii_signature_is_refused_not_crashing() -> None:
    """A non-ASCII v1 value is simply no match (compare_digest would raise on it)."""
    assert reason(BODY, f"t={NOW},v1={'é' * 64}") == "bad_signature"


def test_timestamp_outside_tolerance_is_refused_both_ways() -> None:
    """Older or newer than 300 s is 'stale_timestamp'; exactly 300 s still passes."""
    assert reason(BODY, header(ts=NOW - 301)) == "stale_timestamp"
    assert reason(BODY, header(ts=NOW + 301)) == "stale_timestamp"
    assert verify(BODY, header(ts=NOW - 300), [SECRET.encode()], now=NOW) == NOW - 300


def test_tolerance_zero_or_no_secret_is_a_programming_error() -> None:
    """A zero tolerance (never checked) or an empty secret list cannot be configured."""
    with pytest.raises(ValueError, match="positive"):
        verify(BODY, header(), [SECRET.encode()], now=NOW, tolerance=0)
    with pytest.raises(ValueError, match="secret"):
        verify(BODY, header(), [], now=NOW)


def test_parse_header_ignores_unknown_schemes() -> None:
    """Unknown keys and items without '=' are skipped; the v1 values are kept in order."""
    assert parse_header(f"t={NOW},foo=bar,junk,v1=ab,v1=cd") == (NOW, ("ab", "cd"))
