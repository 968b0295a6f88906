"""`StripeEmulator`: the stateful Stripe API emulator and its test-control Python API."""

from __future__ import annotations

import json
import random
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from .app import EmulatorApp
from .billing import Billing
from .billing_shapes import BillingShapes
from .clock import Clock
from .control import ControlSurface
from .controls import ObjectControls
from .delivery import deliver
from .errors import ApiError, no_such
from .faults import FaultInjector
from .ids import IdFactory
from .lifecycle import Subscriptions
from .render import Renderer
from .routes import CatalogRoutes, Router
from .routes_billing import BillingRoutes
from .routes_events import EventRoutes
from .seed_config import DEFAULT_MIX, SeedOptions, SeedReport
from .seeding import seed
from .server import RunningServer
from .shapes import CURRENT_API_VERSION, LEGACY_API_VERSION, CatalogShapes
from .state import RetryPolicy, State
from .webhooks import DeliveryResult, WebhookEndpoint

Json = dict[str, Any]


class StripeEmulator(ObjectControls):
    """A stateful, in-process Stripe API on 127.0.0.1, plus Python test controls.

    Use as ``with StripeEmulator() as emu:`` and point stripe-python at it with
    ``stripe.StripeClient(api_key=emu.api_key, base_addresses={"api": emu.url})``.
    The clock is frozen at `start_time` and only moves with `advance`.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_emulator",
        legacy_shapes: bool = False,
        start_time: int | datetime | None = None,
        retry_policy: RetryPolicy | None = None,
        event_retention: timedelta = timedelta(days=30),
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = "acct_1EmulatorAccount",
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(start_time, datetime):
            start = int(start_time.timestamp())
        else:
            start = int(wall_clock()) if start_time is None else start_time
        self.api_key = api_key
        self.legacy_shapes = legacy_shapes
        self.api_version = LEGACY_API_VERSION if legacy_shapes else CURRENT_API_VERSION
        self._host, self._port = host, port
        self._wall_clock, self._sleep = wall_clock, sleep
        self._state = State(
            clock=Clock(start),
            ids=IdFactory(),
            catalog=CatalogShapes(account_id),
            shapes=BillingShapes(),
            renderer=Renderer(legacy_shapes),
            api_version=self.api_version,
            retention=event_retention,
            policy=retry_policy or RetryPolicy(),
        )
        self._billing = Billing(self._state)
        self._subs = Subscriptions(self._state, self._billing)
        self.faults = FaultInjector(monotonic)
        routes = CatalogRoutes(self._state).routes()
        routes += BillingRoutes(self._state, self._subs, self._billing).routes()
        routes += EventRoutes(self._state).routes()
        self._app = EmulatorApp(
            state=self._state,
            router=Router(routes),
            faults=self.faults,
            api_keys=frozenset({api_key}),
            sleep=sleep,
            # A proxy, not self: the emulator -> app -> control -> emulator cycle would
            # otherwise need the cyclic GC, which never sees objects frozen by `seed`.
            control=ControlSurface(weakref.proxy(self)),
        )
        self._server: RunningServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving HTTP on an ephemeral (or the given) port."""
        if self._server is None:
            self._server = RunningServer(self._app, self._host, self._port)
        return self

    def stop(self) -> None:
        """Stop serving; state stays readable through the Python API."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API base, e.g. ``http://127.0.0.1:54321`` (the emulator must be started)."""
        if self._server is None:
            raise RuntimeError("StripeEmulator is not started; use `with StripeEmulator() as emu`")
        return self._server.url

    # -- clock -----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        """Emulator time in Unix seconds."""
        return self._state.clock.now

    def advance(self, delta: timedelta) -> list[str]:
        """Move the clock forward, running renewals, retries, expiries and cancellations in
        time order; returns the ids of the events this produced, oldest first."""
        return self.advance_to(self.now + int(delta.total_seconds()))

    def advance_to(self, ts: int) -> list[str]:
        """Like `advance`, to an absolute Unix time."""
        st = self._state
        with st.lock:
            before = len(st.events)
            while (task := st.schedule.pop_due(ts)) is not None:
                st.clock.move_to(task.due)
                self._subs.run(task)
            st.clock.move_to(ts)
            new_ids = [r.id for r in st.events.newest(len(st.events) - before)]
            st.prune_events()
            return new_ids

    # -- requests ----------------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        """Requests received per path since start (or the last reset)."""
        return self._app.counter.snapshot()

    def request_count(self, path: str) -> int:
        """Requests received for one path, e.g. ``/v1/subscriptions``."""
        return self._app.counter.snapshot().get(path, 0)

    def reset_request_counts(self) -> None:
        """Zero the request counters."""
        self._app.counter.reset()

    # -- seeding -----------------------------------------------------------------------------

    def seed(
        self,
        n_customers: int,
        *,
        rng_seed: int = 0,
        mix: Mapping[str, float] | None = None,
        emit_events: bool = False,
        invoices_per_subscription: int = 2,
        cancel_at_period_end_rate: float = 0.05,
        freeze_gc: bool = True,
    ) -> SeedReport:
        """Bulk-create customers, one subscription each with its latest invoices.

        `mix` weights subscription statuses (default `DEFAULT_MIX`: ~80% active). Created
        times spread over the past year. Events are only created with `emit_events`
        (and only inside the retention window). `freeze_gc` calls `gc.freeze()` afterwards
        so the seeded objects do not slow every later full garbage collection.
        """
        options = SeedOptions(
            rng_seed=rng_seed,
            mix=dict(mix or DEFAULT_MIX),
            emit_events=emit_events,
            invoices_per_subscription=invoices_per_subscription,
            cancel_at_period_end_rate=cancel_at_period_end_rate,
            freeze_gc=freeze_gc,
        )
        with self._state.lock:
            return seed(self._state, n_customers, options)

    # -- webhooks ----------------------------------------------------------------------------

    def add_webhook_endpoint(
        self,
        url: str,
        *,
        enabled_events: Sequence[str] = ("*",),
        api_version: str | None = None,
        secret: str | None = None,
    ) -> WebhookEndpoint:
        """Register a receiver; events from now on queue for it (see `deliver_pending`)."""
        st = self._state
        with st.lock:
            return st.webhooks.add(
                st.ids.new("we"),
                url,
                created=st.clock.now,
                enabled_events=enabled_events,
                api_version=api_version,
                secret=secret,
            )

    @property
    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Registered endpoints, oldest first."""
        return list(self._state.webhooks.endpoints)

    def deliver_pending(
        self,
        *,
        duplicates: int = 0,
        shuffle_seed: int | None = None,
        delay: float = 0.0,
        timeout: float = 5.0,
    ) -> list[DeliveryResult]:
        """POST queued events to their endpoints, signed like Stripe, synchronously.

        `duplicates` sends every event that many extra times; `shuffle_seed` reorders the
        deliveries deterministically; `delay` sleeps before each POST. Events that were not
        acknowledged with a 2xx stay queued for the next call.
        """
        return deliver(
            self._state,
            duplicates=duplicates,
            rng=None if shuffle_seed is None else random.Random(shuffle_seed),
            delay=delay,
            timeout=timeout,
            wall_clock=self._wall_clock,
            sleep=self._sleep,
        )

    # -- reading -----------------------------------------------------------------------------

    def get(self, obj_id: str) -> Json:
        """A fresh copy of any object's API view (customer, sub, invoice, event, ...)."""
        st = self._state
        with st.lock:
            record = st.find(obj_id)
            if record is not None:
                loaded: Json = json.loads(st.wire(record))
                return loaded
            if obj_id in st.payment_methods:
                return dict(st.payment_methods[obj_id])
        raise no_such("object", obj_id)

    def objects(self, kind: str) -> list[Json]:
        """Every stored object of a kind (``customers``, ``products``, ``prices``,
        ``subscriptions``, ``invoices``, ``events``), newest first, as the API shows them."""
        st = self._state
        collections = {
            "customers": st.customers,
            "products": st.products,
            "prices": st.prices,
            "subscriptions": st.subscriptions,
            "invoices": st.invoices,
            "events": st.events,
        }
        if kind not in collections:
            raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(collections)}")
        with st.lock:
            return [json.loads(st.wire(r)) for r in reversed(list(collections[kind]))]

    def events(self, event_type: str | None = None) -> list[Json]:
        """Retained events, newest first, optionally of one type."""
        st = self._state
        with st.lock:
            st.prune_events()
            records = [r for r in st.events if event_type is None or r.data["type"] == event_type]
            return [json.loads(st.wire(r)) for r in reversed(records)]

    def _core(self) -> tuple[State, Billing, Subscriptions]:
        return self._state, self._billing, self._subs


__all__ = ["ApiError", "RetryPolicy", "StripeEmulator"]
