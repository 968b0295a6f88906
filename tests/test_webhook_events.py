"""Parsing webhook bodies into events and events into mirrored state (no database)."""

from __future__ import annotations

import json

import pytest

from reconcile.events import (
    HANDLED_TYPES,
    EventError,
    Prepared,
    apply_units,
    event_from_mapping,
    misrouted,
    parse_event,
    prepare,
    state_of,
)
from reconcile.snapshot import InvoiceState, PayloadError, SubscriptionState
from tests import payloads as p
from tests.test_webhook_support import at, encode, event, load_lifecycle


def test_handled_types_are_exactly_the_issue_list() -> None:
    """Seven subscription and nine invoice types are applied; nothing else."""
    assert len(HANDLED_TYPES) == 16
    assert "customer.subscription.pending_update_expired" in HANDLED_TYPES
    assert "invoice.payment_action_required" in HANDLED_TYPES
    assert "invoice.upcoming" not in HANDLED_TYPES
    assert "customer.created" not in HANDLED_TYPES


def test_fixture_events_parse_to_their_states() -> None:
    """The six fixture events yield the states of the subscription's life, at event time."""
    states = [state_of(parse_event(encode(e))) for e in load_lifecycle("Parse")]
    subs = [s for s in states if isinstance(s, SubscriptionState)]
    invoices = [s for s in states if isinstance(s, InvoiceState)]
    assert [s.status for s in subs] == ["active", "past_due", "active", "canceled"]
    assert [s.status for s in invoices] == ["open", "paid"]
    assert subs[0].observed_at == at(1790816000)
    assert invoices[0].stripe_subscription_id == "sub_Parsen1"
    assert subs[-1].end_date == at(1797728000)


def test_both_api_shapes_give_the_same_state() -> None:
    """Legacy top-level fields and the current nested ones are read alike."""
    shapes = {
        "customer.subscription.updated": [p.subscription("sub_1", "cus_1", legacy=legacy)
                                          for legacy in (False, True)],
        "invoice.paid": [p.invoice("in_1", "cus_1", "sub_1", legacy=legacy)
                         for legacy in (False, True)],
    }
    for etype, (new, old) in shapes.items():
        assert new != old
        assert state_of(event_from_mapping(event(etype, new, created=p.T0))) == state_of(
            event_from_mapping(event(etype, old, created=p.T0)))


def test_envelope_fields_are_read() -> None:
    """Id, type, created, livemode, api_version, account and object id come from the body."""
    body = event("invoice.paid", p.invoice("in_9", "cus_9", None), created=p.T0,
                 event_id="evt_9", livemode=True, account="acct_x")
    parsed = parse_event(encode(body))
    assert (parsed.id, parsed.type, parsed.created, parsed.livemode) == (
        "evt_9", "invoice.paid", at(p.T0), True)
    assert (parsed.api_version, parsed.account, parsed.object_id, parsed.kind) == (
        "2026-10-28.endive", "acct_x", "in_9", "invoice")


def test_unhandled_and_id_less_events_have_no_state() -> None:
    """Other types, and invoice.upcoming (whose invoice has no id), map to no state."""
    other = event_from_mapping(event("customer.created", {"id": "cus_1"}, created=p.T0))
    upcoming_obj = {k: v for k, v in p.invoice("x", "cus_1", "sub_1").items() if k != "id"}
    upcoming = event_from_mapping(event("invoice.upcoming", upcoming_obj, created=p.T0))
    assert other.kind is None and state_of(other) is None
    assert upcoming.object_id is None and state_of(upcoming) is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff\xfe", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_event"),
        (b'{"object": "customer", "id": "cus_1"}', "not_an_event"),
        (b'{"object": "event", "id": "evt_1", "type": "x", "created": "soon", "data": {}}',
         "malformed_event"),
        (b'{"object": "event", "id": "evt_1", "type": "x", "created": 1, "data": {}}',
         "malformed_event"),
        (b'{"object": "event", "type": "x", "created": 1, "data": {"object": {}}}',
         "malformed_event"),
    ],
)
def test_bodies_that_are_not_events_are_refused(body: bytes, why: str) -> None:
    """Non-JSON, non-event JSON, and events lacking id, type, created or data.object."""
    with pytest.raises(EventError) as caught:
        parse_event(body)
    assert caught.value.reason == why


def test_thin_event_notification_is_refused() -> None:
    """A v2 thin event (a reference, no snapshot) is refused as such."""
    thin = {
        "id": "evt_test_65R", "object": "v2.core.event", "type": "v1.billing.meter.no_meter_found",
        "created": "2026-09-17T06:20:52.246Z", "livemode": False,
        "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters"},
    }
    with pytest.raises(EventError) as caught:
        parse_event(json.dumps(thin).encode())
    assert caught.value.reason == "thin_event"


def test_handled_event_with_unreadable_object_raises_payload_error() -> None:
    """A subscription event whose object lacks its customer, or is an invoice, is refused."""
    broken = {k: v for k, v in p.subscription("sub_1", "cus_1").items() if k != "customer"}
    with pytest.raises(PayloadError, match="customer"):
        state_of(event_from_mapping(event("customer.subscription.updated", broken, created=1)))
    wrong = p.invoice("in_1", "cus_1", "sub_1")
    with pytest.raises(PayloadError, match="invoice"):
        state_of(event_from_mapping(event("customer.subscription.updated", wrong, created=1)))
    bad_amount = {**p.invoice("in_1", "cus_1", "sub_1"), "amount_due": "lots"}
    with pytest.raises(PayloadError):
        state_of(event_from_mapping(event("invoice.paid", bad_amount, created=1)))


def prepared(etype: str, object_id: str, created: int) -> Prepared:
    obj = (p.subscription(object_id, "cus_1") if etype.startswith("customer.")
           else p.invoice(object_id, "cus_1", None))
    return prepare(event_from_mapping(event(etype, obj, created=created, event_id=f"e{created}")))


def test_apply_units_group_types_and_keep_each_objects_order() -> None:
    """Units hold one type and one event per object; an object's events stay in order."""
    upd, paid = "customer.subscription.updated", "invoice.paid"
    items = [
        prepared(upd, "sub_1", 3), prepared(upd, "sub_2", 1), prepared(paid, "in_1", 2),
        prepared(upd, "sub_1", 1), prepared(upd, "sub_3", 5),
    ]
    units = apply_units(items)
    shown = [[(i.event.type, i.event.object_id, int(i.event.created.timestamp())) for i in u]
             for u in units]
    assert shown == [
        [(upd, "sub_2", 1), (upd, "sub_1", 1), (upd, "sub_3", 5)],
        [(paid, "in_1", 2)],
        [(upd, "sub_1", 3)],
    ]


def test_misrouted_compares_mode_and_connect_account() -> None:
    """Other mode, or a Connect account that is not the mirrored one, is misrouted."""
    sub = p.subscription("sub_1", "cus_1")
    ours = event_from_mapping(event("customer.subscription.updated", sub, created=1))
    live = event_from_mapping(event("customer.subscription.updated", sub, created=1,
                                    livemode=True))
    connect = event_from_mapping(event("customer.subscription.updated", sub, created=1,
                                       account="acct_2"))
    assert misrouted(ours, False, None) is None
    assert misrouted(live, False, "acct_1") == "livemode"
    assert misrouted(connect, False, "acct_1") == "account"
    assert misrouted(connect, False, None) == "account"  # unknown account: not provably ours
    assert misrouted(connect, False, "acct_2") is None
