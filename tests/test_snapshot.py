"""Snapshot normalisation of Stripe payloads in both API shapes.  [pure, no I/O]"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconcile.snapshot import (
    PayloadError,
    invoice_from_payload,
    invoice_subscription_id,
    subscription_from_payload,
)
from tests import payloads as p

NOW = datetime(2026, 12, 1, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "objects"


def ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@pytest.mark.parametrize("legacy", [False, True])
def test_subscription_period_end_read_from_either_shape(legacy: bool) -> None:
    """Period end comes from items.data[] (current) or the top level (older API)."""
    state = subscription_from_payload(p.subscription("sub_1", "cus_1", legacy=legacy), NOW)
    assert state.current_period_end == ts(p.T0 + 30 * 86400)
    assert state.stripe_price_id == "price_basic"
    assert state.observed_at == NOW


def test_new_shape_wins_when_both_are_present() -> None:
    """When a payload carries both shapes, the items' period end is used."""
    payload = p.subscription("sub_1", "cus_1")
    payload["current_period_end"] = p.T0  # stale top-level value
    assert subscription_from_payload(payload, NOW).current_period_end == ts(p.T0 + 30 * 86400)


def test_latest_item_period_end_is_the_subscription_period_end() -> None:
    """With several items, access runs to the latest item's period end."""
    payload = p.subscription("sub_1", "cus_1")
    item2 = dict(payload["items"]["data"][0], id="si_2", current_period_end=p.T0 + 99)
    payload["items"]["data"].append(item2)
    payload["items"]["data"][0]["current_period_end"] = p.T0 + 50
    assert subscription_from_payload(payload, NOW).current_period_end == ts(p.T0 + 99)


@pytest.mark.parametrize(
    ("ended_at", "cancel_at", "expected"),
    [(None, None, None), (None, p.T0 + 5, p.T0 + 5), (p.T0 + 1, p.T0 + 5, p.T0 + 1)],
)
def test_end_date_is_ended_at_else_cancel_at(
    ended_at: int | None, cancel_at: int | None, expected: int | None
) -> None:
    """end_date prefers ended_at and falls back to cancel_at."""
    payload = p.subscription("sub_1", "cus_1", ended_at=ended_at, cancel_at=cancel_at)
    got = subscription_from_payload(payload, NOW).end_date
    assert got == (None if expected is None else ts(expected))


def test_expanded_customer_object_gives_its_id() -> None:
    """An expanded customer object normalises to its id."""
    payload = p.subscription("sub_1", "cus_1")
    payload["customer"] = {"id": "cus_1", "object": "customer"}
    assert subscription_from_payload(payload, NOW).stripe_customer_id == "cus_1"


@pytest.mark.parametrize("legacy", [False, True])
def test_invoice_subscription_read_from_either_shape(legacy: bool) -> None:
    """An invoice's subscription comes from parent.subscription_details or the old field."""
    payload = p.invoice("in_1", "cus_1", "sub_9", status="open", legacy=legacy)
    state = invoice_from_payload(payload, NOW)
    assert state.stripe_subscription_id == "sub_9"
    assert (state.status, state.amount_due, state.currency) == ("open", 1500, "usd")


def test_parent_wins_over_legacy_subscription_field() -> None:
    """When both are present the parent's subscription is used."""
    payload: dict[str, Any] = p.invoice("in_1", "cus_1", "sub_new")
    payload["subscription"] = "sub_old"
    assert invoice_subscription_id(payload) == "sub_new"


def test_real_shaped_fixtures_normalise() -> None:
    """Stripe's OpenAPI fixture objects (current shape) normalise without loss."""
    sub = json.loads((FIXTURES / "subscription.json").read_text())
    state = subscription_from_payload(sub, NOW)
    assert state.stripe_subscription_id == sub["id"]
    assert state.current_period_end == ts(sub["items"]["data"][0]["current_period_end"])
    inv = json.loads((FIXTURES / "invoice.json").read_text())
    inv_state = invoice_from_payload(inv, NOW)
    assert inv_state.stripe_subscription_id == "subscription"  # placeholder in the fixture
    assert inv_state.stripe_invoice_id == inv["id"]


@pytest.mark.parametrize("missing", ["id", "customer", "status"])
def test_missing_required_field_is_a_payload_error(missing: str) -> None:
    """A payload without id, customer or status is rejected with the field named."""
    payload = p.subscription("sub_1", "cus_1")
    del payload[missing]
    with pytest.raises(PayloadError, match=missing):
        subscription_from_payload(payload, NOW)


def test_non_numeric_timestamp_is_rejected() -> None:
    """A timestamp that is not epoch seconds is a payload error, not a silent None."""
    payload = p.subscription("sub_1", "cus_1", ended_at="yesterday")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="epoch"):
        subscription_from_payload(payload, NOW)
