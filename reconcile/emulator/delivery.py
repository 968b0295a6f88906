"""Synchronous webhook delivery with duplicate, reorder and delay options."""

from __future__ import annotations

import random
from collections.abc import Callable

from .state import State
from .webhooks import Delivery, DeliveryResult, post_event, sign_payload


def deliver(
    state: State,
    *,
    duplicates: int,
    rng: random.Random | None,
    delay: float,
    timeout: float,
    wall_clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[DeliveryResult]:
    """Send every queued event to its endpoint; failed ones are queued again."""
    with state.lock:
        plan: list[Delivery] = []
        for endpoint in state.webhooks.endpoints:
            for event_id in endpoint.pending:
                record = state.events.get(event_id)
                if record is None:  # expired out of retention before delivery
                    continue
                payload = state.wire(record)
                for copy in range(1 + duplicates):
                    plan.append(
                        Delivery(endpoint, event_id, record.data["type"], payload, copy > 0)
                    )
            endpoint.pending = []
    if rng is not None:
        rng.shuffle(plan)
    results: list[DeliveryResult] = []
    # The POSTs happen without the lock: a receiver may call back into the emulator's API.
    for item in plan:
        if delay > 0:
            sleep(delay)
        signature = sign_payload(item.payload, item.endpoint.secret, int(wall_clock()))
        status, error = post_event(item.endpoint.url, item.payload, signature, timeout)
        results.append(
            DeliveryResult(
                item.event_id,
                item.event_type,
                item.endpoint.id,
                item.endpoint.url,
                status,
                error,
                item.duplicate,
                signature,
            )
        )
    _settle(state, plan, results)
    return results


def _settle(state: State, plan: list[Delivery], results: list[DeliveryResult]) -> None:
    """Requeue undelivered events; count delivered ones off `pending_webhooks`."""
    delivered: set[tuple[str, str]] = set()
    for result in results:
        if result.ok:
            delivered.add((result.endpoint_id, result.event_id))
    with state.lock:
        seen: set[tuple[str, str]] = set()
        for item in plan:
            key = (item.endpoint.id, item.event_id)
            if key in seen:
                continue
            seen.add(key)
            if key not in delivered:
                item.endpoint.pending.append(item.event_id)
                continue
            record = state.events.get(item.event_id)
            if record is not None:
                pending = max(0, int(record.data["pending_webhooks"]) - 1)
                state.replace(state.events, record, {"pending_webhooks": pending})
