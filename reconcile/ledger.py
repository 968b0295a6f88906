"""Stripe events processed exactly once: each event's `stripe_events` row commits in the same
transaction as its effect on the mirrored tables, or neither does.

Shared by the webhook receiver and `reconcile replay-events`. Events travel in groups (the
receiver commits what arrived together; see webhook.py): the apply path is set-based, so one
transaction for several events costs little more than for one. Within a transaction:

1. The ledger rows are inserted first, in key order. A concurrent delivery of the same event
   blocks on that key until the other transaction ends, then finds it (a duplicate, no
   second effect) or, if that one rolled back, takes over.
2. The customers concerned are locked (advisory, in a fixed order): apply reads other rows
   of the customer (a new subscription's insert, the user's status) that a concurrent event
   could be changing.
3. Events are applied in units (events.apply_units): one event type each (the apply path's
   `event_type`), at most one event per object, each object's events in `created` order.

An event whose payload cannot decide (WEBHOOK_REFETCH) leaves its group unrecorded and is
settled on its own: Stripe is read first, outside any transaction, so no lock is ever held
while a request to Stripe runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol

from sqlalchemy import Connection, Engine, text

from config.settings import WebhookRefetch
from reconcile import diff, staging
from reconcile.apply import reconcile_staged
from reconcile.events import (
    Event,
    ObjectKind,
    Prepared,
    State,
    apply_units,
    misrouted,
    prepare,
    state_from_object,
)
from reconcile.snapshot import InvoiceState, SubscriptionState
from reconcile.source import RetrievedLike

Outcome = Literal["applied", "no_change", "ignored", "misrouted", "duplicate"]

# Namespace of the per-customer advisory locks (two-int form); the run lock uses the bigint
# form, whose key space PostgreSQL keeps apart from this one.
_CUSTOMER_LOCK_CLASS = 0x5EC0
_DELETED = "customer.subscription.deleted"


class ObjectSource(Protocol):
    """The re-reads processing may need (`reconcile.stripe_api.StripeGateway` has them)."""

    def retrieve_subscription(self, subscription_id: str) -> RetrievedLike | None: ...
    def retrieve_invoice(self, invoice_id: str) -> RetrievedLike | None: ...


@dataclass(frozen=True, slots=True)
class LedgerOptions:
    """How events are processed: the settings that matter and who is asking."""

    refetch: WebhookRefetch
    livemode: bool
    source: Literal["webhook", "replay"] = "webhook"
    notify_max_age: timedelta = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class Processed:
    """What processing one event did, for the response, the summary log and metrics."""

    event_id: str
    type: str
    object_id: str | None
    outcome: Outcome
    refetched: bool = False
    refetch_missing: bool = False
    reason: str | None = None
    fields: tuple[str, ...] = field(default=())


def process_event(
    engine: Engine, event: Event, options: LedgerOptions, gateway: ObjectSource | None
) -> Processed:
    """Record and apply one event (re-fetching it first if it needs that)."""
    item = prepare(event)
    result = process_events(engine, [item], options)[0]
    return result if result is not None else settle(engine, item, options, gateway)


def settle(
    engine: Engine, item: Prepared, options: LedgerOptions, gateway: ObjectSource | None
) -> Processed:
    """Re-read the event's object from Stripe, then record and apply what Stripe says.

    The request to Stripe happens before the transaction, so no lock is held while it runs.
    """
    assert item.state is not None, "only events that report a state are re-fetched"
    fetched = _refetch(gateway, item.state)
    result = process_events(engine, [item], options, fetched={item.event.id: fetched})[0]
    assert result is not None  # given its re-fetched state, an event is never deferred
    return result


def process_events(
    engine: Engine, items: Sequence[Prepared], options: LedgerOptions,
    *, fetched: Mapping[str, State | None] | None = None,
) -> list[Processed | None]:
    """Record and apply `items` in one transaction; one result per item, in order.

    Raises (and writes nothing) if any of them fails. An event id given twice is processed
    once; its later copies are duplicates. An event that needs a re-fetch from Stripe (per
    WEBHOOK_REFETCH) is left out, unrecorded, with None as its result: pass it to `settle`.
    `fetched` holds states already re-fetched (None for a 404), by event id.
    """
    first: dict[str, Prepared] = {}
    for item in items:
        first.setdefault(item.event.id, item)
    unique = list(first.values())
    done: dict[str, Processed] = {}
    deferred: set[str] = set()
    with engine.begin() as conn:
        fresh = _record(conn, [i.event for i in unique], options.source)
        todo = [i for i in unique if i.event.id in fresh]
        account = _our_account(conn) if any(i.event.account for i in todo) else None
        handled: list[Prepared] = []
        for item in todo:
            reason = misrouted(item.event, options.livemode, account)
            if reason is not None:
                done[item.event.id] = _result(item, "misrouted", reason=reason)
            elif item.state is None:
                done[item.event.id] = _result(item, "ignored")
            else:
                handled.append(item)
        if handled:
            _lock_customers(conn, handled)
            unit = _Units(conn, options, fetched or {})
            for group in apply_units(handled):
                done.update(unit.apply_group(group))
            deferred = {i.event.id for i in unit.deferred}
            if deferred:
                conn.execute(
                    text("DELETE FROM stripe_events WHERE event_id = ANY(CAST(:ids AS text[]))"),
                    {"ids": list(deferred)},
                )
        if done:
            _finish(conn, done)
    results: list[Processed | None] = []
    for item in items:
        if item.event.id in deferred:
            results.append(None)
            deferred.discard(item.event.id)  # a later copy is a duplicate
        else:  # later copies of an id are duplicates
            results.append(done.pop(item.event.id, None) or _result(item, "duplicate"))
    return results


def recorded_ids(conn: Connection, event_ids: list[str]) -> set[str]:
    """Which of `event_ids` the ledger already holds."""
    found = conn.execute(
        text("SELECT event_id FROM stripe_events WHERE event_id = ANY(CAST(:ids AS text[]))"),
        {"ids": event_ids},
    ).scalars()
    return {str(i) for i in found}


def _result(
    item: Prepared, outcome: Outcome, *, reason: str | None = None, refetched: bool = False,
    missing: bool = False, fields: tuple[str, ...] = (),
) -> Processed:
    e = item.event
    return Processed(e.id, e.type, e.object_id, outcome, refetched, missing, reason, fields)


def _record(conn: Connection, events: list[Event], source: str) -> set[str]:
    """Insert the ledger rows; returns the ids that were not recorded before."""
    rows = conn.execute(
        text(
            "INSERT INTO stripe_events (event_id, type, created, livemode, api_version, "
            "object_id, outcome, source) "
            "SELECT v.*, 'processing', :source FROM unnest(CAST(:ids AS text[]), "
            "CAST(:types AS text[]), CAST(:created AS timestamptz[]), "
            "CAST(:live AS boolean[]), CAST(:api AS text[]), CAST(:obj AS text[])) AS v "
            # Key order in every transaction: two groups sharing events cannot deadlock.
            "ORDER BY 1 ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        ),
        {
            "ids": [e.id for e in events], "types": [e.type for e in events],
            "created": [e.created for e in events], "live": [e.livemode for e in events],
            "api": [e.api_version for e in events], "obj": [e.object_id for e in events],
            "source": source,
        },
    ).scalars()
    return {str(i) for i in rows}


def _finish(conn: Connection, done: dict[str, Processed]) -> None:
    # clock_timestamp, not now(): now() is the transaction's start, i.e. received_at.
    conn.execute(
        text(
            "UPDATE stripe_events e SET outcome = v.outcome, processed_at = clock_timestamp() "
            "FROM unnest(CAST(:ids AS text[]), CAST(:outcomes AS text[])) AS v(id, outcome) "
            "WHERE e.event_id = v.id"
        ),
        {"ids": list(done), "outcomes": [p.outcome for p in done.values()]},
    )


def _our_account(conn: Connection) -> str | None:
    found = conn.execute(text("SELECT stripe_account_id FROM reconcile_account")).scalar()
    return None if found is None else str(found)


def _lock_customers(conn: Connection, items: list[Prepared]) -> None:
    customers = sorted({i.state.stripe_customer_id for i in items if i.state is not None})
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(:cls, h) FROM (SELECT DISTINCT hashtext(c) AS h "
            "FROM unnest(CAST(:customers AS text[])) AS c ORDER BY h) AS ordered"
        ),
        {"cls": _CUSTOMER_LOCK_CLASS, "customers": customers},
    )


def _refetch(gateway: ObjectSource | None, state: State) -> State | None:
    """Stripe's current state of the object; None when Stripe answers 404."""
    if gateway is None:
        raise ValueError("re-fetching needs a Stripe gateway; pass one or use refetch='never'")
    kind: ObjectKind
    if isinstance(state, SubscriptionState):
        kind, found = "subscription", gateway.retrieve_subscription(state.stripe_subscription_id)
    else:
        kind, found = "invoice", gateway.retrieve_invoice(state.stripe_invoice_id)
    return None if found is None else state_from_object(kind, found.object, found.observed_at)


class _Units:
    """Applies units one after another on one connection (local, short-lived state)."""

    def __init__(
        self, conn: Connection, options: LedgerOptions, fetched: Mapping[str, State | None]
    ) -> None:
        self._conn = conn
        self._options = options
        self._fetched = fetched
        self._used = False  # the staging and drift tables hold an earlier unit's rows
        self.deferred: list[Prepared] = []

    def apply_group(self, group: list[Prepared]) -> dict[str, Processed]:
        """Apply a unit; objects the payload cannot settle are applied as Stripe has them
        (when already re-fetched) or deferred to `settle`."""
        settle = group
        if self._options.refetch != "always":
            self._stage([i.state for i in group if i.state is not None])
            disputed = set()
            if self._options.refetch == "conflicts":
                disputed = {stripe_id for _, stripe_id in diff.conflicts(self._conn)}
            settle = [i for i in group
                      if i.event.object_id in disputed or i.event.id in self._fetched]
            if not settle:
                return self._apply(group, allow_tie=False)
        results: dict[str, Processed] = {}
        rest = [i for i in group if i not in settle]
        if rest:
            self._stage([i.state for i in rest if i.state is not None])
            results.update(self._apply(rest, allow_tie=False))
        for item in settle:
            if item.event.id not in self._fetched:
                self.deferred.append(item)
                continue
            assert item.state is not None
            fetched = self._fetched[item.event.id]
            self._stage([fetched if fetched is not None else item.state])
            # A state read after the event is the newest truth and may win a same-second
            # tie. So may a deletion Stripe confirms with a 404: the deleted payload is final.
            tie = fetched is not None or item.event.type == _DELETED
            results.update(self._apply(
                [item], allow_tie=tie, refetched=fetched is not None, missing=fetched is None
            ))
        return results

    def _stage(self, states: list[State]) -> None:
        if self._used:
            # The tables empty themselves at commit; a later unit of the same transaction
            # must not see (and apply again) what an earlier one staged and recorded.
            staging.clear(self._conn)
        subs = [s for s in states if isinstance(s, SubscriptionState)]
        invoices = [s for s in states if isinstance(s, InvoiceState)]
        if subs:
            staging.stage_subscriptions(self._conn, subs)
        if invoices:
            staging.stage_invoices(self._conn, invoices)
        self._used = True

    def _apply(
        self, items: list[Prepared], *, allow_tie: bool, refetched: bool = False,
        missing: bool = False,
    ) -> dict[str, Processed]:
        applied = reconcile_staged(
            self._conn, allow_tie=allow_tie, event_type=items[0].event.type,
            notify_max_age=self._options.notify_max_age,
        )
        changed: dict[str, set[str]] = {}
        if applied.total:
            for d in diff.entries(self._conn):
                if d.action != "report":  # field names only: values may be personal data
                    name = d.field if d.action == "update" else d.kind
                    changed.setdefault(d.stripe_id, set()).add(f"{d.object}.{name}")
        results: dict[str, Processed] = {}
        for item in items:
            assert item.state is not None
            fields = changed.get(item.event.object_id or "", set())
            if fields:  # and the user status this object's change moved
                fields = fields | changed.get(item.state.stripe_customer_id, set())
            results[item.event.id] = _result(
                item, "applied" if fields else "no_change", refetched=refetched,
                missing=missing, fields=tuple(sorted(fields)),
            )
        return results
