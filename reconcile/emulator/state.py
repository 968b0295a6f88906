"""The emulator's shared state: collections, clock, scheduler and event emission."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from .billing_shapes import BillingShapes
from .clock import Clock
from .ids import IdFactory
from .render import Renderer, invoice_subscription
from .shapes import TEST_CARDS, CatalogShapes
from .store import Collection, Record
from .webhooks import WebhookRegistry

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The API request being served; events it causes carry this in `request`."""

    id: str
    idempotency_key: str | None


@dataclass(frozen=True)
class RetryPolicy:
    """Smart-retry settings for failed renewal invoices.

    After the first failed attempt Stripe retries at these delays; when the last retry fails
    the subscription is canceled (its invoice stays open) or marked unpaid (its invoice
    becomes uncollectible).
    """

    retry_delays: tuple[timedelta, ...] = (timedelta(days=3), timedelta(days=5), timedelta(days=7))
    final_action: Literal["cancel", "unpaid"] = "cancel"
    incomplete_expiry: timedelta = timedelta(hours=23)

    @property
    def max_attempts(self) -> int:
        """Attempts in total, the first one included."""
        return 1 + len(self.retry_delays)


@dataclass(order=True, frozen=True, slots=True)
class Task:
    """A timed state change: renewal, payment retry, cancel_at or incomplete expiry."""

    due: int
    seq: int
    kind: str = field(compare=False)
    obj_id: str = field(compare=False)


class Scheduler:
    """A heap of tasks; stale tasks are skipped when popped, so nothing is ever removed."""

    def __init__(self) -> None:
        self._heap: list[Task] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: int, kind: str, obj_id: str) -> None:
        """Schedule `kind` for `obj_id` at `due`."""
        heapq.heappush(self._heap, Task(due, next(self._seq), kind, obj_id))

    def push_many(self, tasks: Iterable[tuple[int, str, str]]) -> None:
        """Schedule many tasks with one heapify (seeding)."""
        self._heap.extend(Task(due, next(self._seq), kind, oid) for due, kind, oid in tasks)
        heapq.heapify(self._heap)

    def pop_due(self, until: int) -> Task | None:
        """The earliest task due at or before `until`, removed from the heap."""
        if self._heap and self._heap[0].due <= until:
            return heapq.heappop(self._heap)
        return None


class State:
    """Everything the API, the billing engine and the test controls share.

    One re-entrant lock guards it all: requests are short and the list path is mostly a
    bisect plus cached bytes, so a single lock keeps the model simple without hurting speed.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        ids: IdFactory,
        catalog: CatalogShapes,
        shapes: BillingShapes,
        renderer: Renderer,
        api_version: str,
        retention: timedelta,
        policy: RetryPolicy,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.ids = ids
        self.catalog = catalog
        self.shapes = shapes
        self.renderer = renderer
        self.api_version = api_version
        self.retention = int(retention.total_seconds())
        self.policy = policy
        self.webhooks = WebhookRegistry()
        self.schedule = Scheduler()
        self.request: RequestInfo | None = None
        self.customers = Collection("/v1/customers")
        self.products = Collection("/v1/products")
        self.prices = Collection("/v1/prices")
        self.subscriptions = Collection(
            "/v1/subscriptions", {"customer": lambda d: str(d["customer"])}
        )
        self.invoices = Collection(
            "/v1/invoices",
            {"customer": lambda d: str(d["customer"]), "subscription": invoice_subscription},
        )
        self.events = Collection("/v1/events")
        self.payment_methods = {
            card.id: catalog.payment_method(card, clock.now, None) for card in TEST_CARDS.values()
        }
        self.account = catalog.account(clock.now)
        self._by_prefix = {
            "cus": self.customers,
            "prod": self.products,
            "price": self.prices,
            "sub": self.subscriptions,
            "in": self.invoices,
            "evt": self.events,
        }

    def find(self, obj_id: str) -> Record | None:
        """Any stored object by id, found through its prefix."""
        prefix = obj_id.rsplit("_", 1)[0]
        collection = self._by_prefix.get(prefix)
        return None if collection is None else collection.get(obj_id)

    def view(self, record: Record) -> Json:
        """The API view (pinned or legacy shape) of a record."""
        return self.renderer.render(record.data)

    def wire(self, record: Record) -> bytes:
        """The record's JSON, serialised once and cached until it changes."""
        if record.wire is None:
            record.wire = json.dumps(self.view(record), separators=(",", ":")).encode()
        return record.wire

    def replace(self, collection: Collection, record: Record, changes: Json) -> tuple[Json, Json]:
        """Apply top-level `changes` copy-on-write; returns (old, new)."""
        new = {**record.data, **changes}
        old = collection.replace(record, new)
        return old, new

    def emit(
        self,
        event_type: str,
        obj: Json,
        *,
        previous: Json | None = None,
        created: int | None = None,
    ) -> Record:
        """Record an event whose `data.object` is `obj` as it is now."""
        evt_id = self.ids.new("evt")
        data: Json = {"object": self.renderer.render(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        request = self.request
        when = self.clock.now if created is None else created
        event = {
            "id": evt_id,
            "object": "event",
            "api_version": self.api_version,
            "created": when,
            "data": data,
            "livemode": False,
            "pending_webhooks": self.webhooks.enqueue(evt_id, event_type),
            "request": {
                "id": None if request is None else request.id,
                "idempotency_key": None if request is None else request.idempotency_key,
            },
            "type": event_type,
        }
        return self.events.add(Record(evt_id, when, event))

    def emit_update(self, event_type: str, old: Json, new: Json) -> Record | None:
        """Emit `*.updated` with `previous_attributes` holding the changed top-level fields."""
        before, after = self.renderer.render(old), self.renderer.render(new)
        previous = {
            k: before.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)
        }
        if not previous:
            return None
        return self.emit(event_type, new, previous=previous)

    def prune_events(self) -> None:
        """Forget events older than the retention window (30 days on Stripe)."""
        self.events.prune_before(self.clock.now - self.retention)
