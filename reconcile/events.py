"""Stripe events: parse a webhook body or a listed event, and say which ones we apply.  [pure]

Only snapshot (v1) events carry the object they are about; a thin (v2) event notification
carries a reference that would need a second request, and none of the types we mirror are
sent that way, so it is refused rather than half-handled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from reconcile.snapshot import (
    InvoiceState,
    PayloadError,
    SubscriptionState,
    epoch,
    invoice_from_payload,
    subscription_from_payload,
)

ObjectKind = Literal["subscription", "invoice"]
State = SubscriptionState | InvoiceState

SUBSCRIPTION_EVENTS: frozenset[str] = frozenset(
    f"customer.subscription.{action}"
    for action in (
        "created", "updated", "deleted", "paused", "resumed",
        "pending_update_applied", "pending_update_expired",
    )
)
INVOICE_EVENTS: frozenset[str] = frozenset(
    f"invoice.{action}"
    for action in (
        "created", "finalized", "updated", "paid", "payment_succeeded", "payment_failed",
        "payment_action_required", "marked_uncollectible", "voided",
    )
)
HANDLED_TYPES: frozenset[str] = SUBSCRIPTION_EVENTS | INVOICE_EVENTS


class EventError(ValueError):
    """A body that is not a Stripe snapshot event; `reason` is a stable short label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    """The envelope of one Stripe event and the object it carries (`data.object`)."""

    id: str
    type: str
    created: datetime
    livemode: bool
    api_version: str | None
    account: str | None
    object_id: str | None
    object: Mapping[str, Any]

    @property
    def kind(self) -> ObjectKind | None:
        """Which mirrored object this event updates; None for types we do not apply.

        An event without an object id (`invoice.upcoming` is one) has nothing to mirror.
        """
        if self.object_id is None:
            return None
        if self.type in SUBSCRIPTION_EVENTS:
            return "subscription"
        if self.type in INVOICE_EVENTS:
            return "invoice"
        return None


def parse_event(body: bytes) -> Event:
    """The event in a (verified) webhook body; raises EventError."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EventError("invalid_json", "body is not valid JSON") from None
    return event_from_mapping(data)


def event_from_mapping(data: object) -> Event:
    """An event from decoded JSON (a webhook body or an item of GET /v1/events)."""
    if not isinstance(data, Mapping):
        raise EventError("not_an_event", "body is not a JSON object")
    kind = data.get("object")
    if (isinstance(kind, str) and kind.startswith("v2.")) or (
        "related_object" in data and "data" not in data
    ):
        raise EventError(
            "thin_event",
            "thin (v2) event notifications are not supported; send snapshot events",
        )
    if kind != "event":
        raise EventError("not_an_event", f"body is not a Stripe event (object={str(kind)[:40]!r})")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    payload = data.get("data")
    obj = payload.get("object") if isinstance(payload, Mapping) else None
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise EventError("malformed_event", "event lacks an id or a type")
    if isinstance(created, bool) or not isinstance(created, int):
        raise EventError("malformed_event", f"event {event_id[:64]} lacks an integer created")
    if not isinstance(obj, Mapping):
        raise EventError("malformed_event", f"event {event_id[:64]} lacks data.object")
    object_id = obj.get("id")
    account, api_version = data.get("account"), data.get("api_version")
    observed = epoch(created)
    assert observed is not None  # created is an int here
    return Event(
        id=event_id,
        type=event_type,
        created=observed,
        livemode=bool(data.get("livemode")),
        api_version=api_version if isinstance(api_version, str) else None,
        account=account if isinstance(account, str) else None,
        object_id=object_id if isinstance(object_id, str) and object_id else None,
        object=obj,
    )


def state_from_object(
    kind: ObjectKind, obj: Mapping[str, Any], observed_at: datetime
) -> SubscriptionState | InvoiceState:
    """Normalise a subscription or invoice payload; raises snapshot.PayloadError."""
    if kind == "subscription":
        return subscription_from_payload(obj, observed_at)
    return invoice_from_payload(obj, observed_at)


def state_of(event: Event) -> State | None:
    """The state a handled event reports, as of `event.created`; None for other events.

    Raises PayloadError when a handled event's object lacks what we mirror, or is not the
    kind of object its type promises.
    """
    kind = event.kind
    if kind is None:
        return None
    if event.object.get("object") not in (kind, None):
        raise PayloadError(f"event {event.id} ({event.type}) carries a {event.object['object']}")
    try:
        return state_from_object(kind, event.object, event.created)
    except PayloadError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. a non-numeric amount
        raise PayloadError(f"event {event.id} ({event.type}): {exc}") from None


@dataclass(frozen=True, slots=True)
class Prepared:
    """An event with the state it reports (None for types we do not apply)."""

    event: Event
    state: State | None


def prepare(event: Event) -> Prepared:
    """Read the event's object; raises snapshot.PayloadError if it cannot be read."""
    return Prepared(event, state_of(event))


def misrouted(event: Event, livemode: bool, account: str | None) -> str | None:
    """Why the event belongs to another mode or account than ours; None when it is ours.

    `account` is the Stripe account the database mirrors, when known. Our own account's
    events carry no `account`; one that does comes from a Connect endpoint and is ours only
    if it names the account this database mirrors.
    """
    if event.livemode != livemode:
        return "livemode"
    if event.account is not None and event.account != account:
        return "account"
    return None


def apply_units(items: list[Prepared]) -> list[list[Prepared]]:
    """Split events into apply units: one event type each, at most one event per object, and
    each object's events in `created` order across units.

    An object's next event goes to a later unit than its previous one, else to the first unit
    of its type, so units stay few.
    """
    units: list[tuple[str, list[Prepared]]] = []
    last_unit: dict[str | None, int] = {}
    for item in sorted(items, key=lambda i: i.event.created):  # stable: ties keep arrival
        start = last_unit.get(item.event.object_id, -1) + 1
        index = next(
            (n for n in range(start, len(units)) if units[n][0] == item.event.type), None
        )
        if index is None:
            units.append((item.event.type, []))
            index = len(units) - 1
        units[index][1].append(item)
        last_unit[item.event.object_id] = index
    return [members for _, members in units]
