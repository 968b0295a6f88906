"""Drain the notification outbox: claim due rows, send them, record what happened.

Claiming is one short transaction (`FOR UPDATE SKIP LOCKED`, so several workers never take
the same row) that marks rows `sending` with a lease; sending happens outside any
transaction; each result is committed at once, guarded by the claim token, so a worker
that died mid-batch loses at most the e-mail in flight, and its rows are claimed again when
the lease expires. Delivery is therefore at least once, with the duplicate window reduced
to one e-mail whose send succeeded just before its worker died.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from reconcile import alerts as alert
from reconcile.alerts import Alerts
from reconcile.mail.message import OutgoingEmail, Sender, SendError, SenderUnusableError
from reconcile.mail.render import Renderer
from reconcile.notify_policy import EMAIL_KINDS, backoff, should_give_up
from reconcile.notify_sql import (
    CLAIM,
    FACTS,
    FINISH,
    HOUSEKEEPING,
    PREVIEW,
    RELEASE,
    Claimed,
    housekeeping_params,
)

log = structlog.get_logger("reconcile.notify")

Clock = Callable[[], datetime]
ProductNames = Callable[[str], str | None]



@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """How hard to try: NOTIFY_MAX_ATTEMPTS, NOTIFY_MAX_AGE_HOURS and fixed timings."""

    max_attempts: int = 8
    max_age: timedelta = timedelta(hours=72)
    # Longer than any one send can take (SendGrid's timeout is 10 s), short enough that a
    # dead worker's e-mails are not held up for long.
    lease: timedelta = timedelta(minutes=2)
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_cap: timedelta = timedelta(hours=1)
    batch_size: int = 50


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What one drain (or a worker's whole life) did; `stopped` says why it stopped early."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    canceled: int = 0
    suppressed: int = 0
    stopped: str | None = None

    def __add__(self, other: DrainResult) -> DrainResult:
        counts = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in fields(self) if f.name != "stopped"}
        return DrainResult(**counts, stopped=other.stopped or self.stopped)


@dataclass(frozen=True, slots=True)
class Preview:
    """A row a drain would handle now (for `reconcile notify --dry-run`)."""

    notification_id: int
    kind: str
    stripe_invoice_id: str
    recipient: str | None
    subject: str | None


def _finish(engine: Engine, row: Claimed, status: str, **values: object) -> None:
    with engine.begin() as conn:
        found = conn.execute(text(FINISH), {
            "id": row.id, "token": row.token, "status": status,
            "next_attempt_at": values.get("next_attempt_at"),
            "error": values.get("error"), "message_id": values.get("message_id"),
            "sent_at": values.get("sent_at"),
        }).rowcount
    if not found:
        # Our lease expired and another worker took the row over: its result stands.
        log.warning("notify.claim_lost", notification_id=row.id, kind=row.kind,
                    invoice_id=row.stripe_invoice_id, status=status)


def _housekeep(engine: Engine, policy: NotifyPolicy, now: datetime, alerts: Alerts) -> DrainResult:
    found: dict[str, list[tuple[object, ...]]] = {"canceled": [], "suppressed": [], "failed": []}
    with engine.begin() as conn:
        params = housekeeping_params(now, policy.max_age, policy.max_attempts)
        for action, sql in HOUSEKEEPING:
            found[action].extend(tuple(r) for r in conn.execute(text(sql), params))
    # Alerts only once the change is committed.
    for n_id, kind, invoice_id, attempts in found["failed"]:
        alerts.emit(alert.EMAIL_FAILED, notification_id=n_id, kind=kind, invoice_id=invoice_id,
                    attempts=attempts, reason="worker lease expired on the last attempt")
    return DrainResult(canceled=len(found["canceled"]), suppressed=len(found["suppressed"]),
                       failed=len(found["failed"]))


def _claim(engine: Engine, policy: NotifyPolicy, now: datetime, limit: int) -> list[Claimed]:
    token = uuid.uuid4().hex
    with engine.begin() as conn:
        rows = conn.execute(text(CLAIM), {
            "now": now, "lease_until": now + policy.lease, "token": token, "limit": limit,
        }).mappings().all()
        ids = [str(r["stripe_invoice_id"]) for r in rows]
        facts = {str(f["stripe_invoice_id"]): f for f in
                 conn.execute(text(FACTS), {"ids": ids}).mappings()} if ids else {}
    return [Claimed.of(r, facts.get(str(r["stripe_invoice_id"])), token) for r in rows]


class _Drain:
    """One drain's collaborators; per-row handling lives here to keep `drain` readable."""

    def __init__(
        self, engine: Engine, sender: Sender, policy: NotifyPolicy, clock: Clock,
        renderer: Renderer, alerts: Alerts, product_names: ProductNames | None,
        jitter: Callable[[], float],
    ) -> None:
        self.engine, self.sender, self.policy, self.clock = engine, sender, policy, clock
        self.renderer, self.alerts, self.product_names = renderer, alerts, product_names
        self.jitter = jitter

    def _alert_claimed(self, row: Claimed) -> None:
        inv = row.invoice
        event, reason = alert.FOR_KIND[row.kind]
        self.alerts.emit(
            event, notification_id=row.id, invoice_id=row.stripe_invoice_id,
            customer_id=row.stripe_customer_id,
            subscription_id=inv.stripe_subscription_id if inv else None,
            amount_due=inv.amount_remaining if inv else None,
            currency=inv.currency if inv else None,
            attempt_count=inv.attempt_count if inv else None,
            invoice_status=inv.status if inv else None,
            reason=reason,
        )

    def _fail(self, row: Claimed, reason: str, status: int | None = None) -> DrainResult:
        _finish(self.engine, row, "failed", error=reason)
        self.alerts.emit(
            alert.EMAIL_FAILED, notification_id=row.id, kind=row.kind,
            invoice_id=row.stripe_invoice_id, customer_id=row.stripe_customer_id,
            attempts=row.attempts, status=status, reason=reason,
        )
        return DrainResult(failed=1)

    def _email(self, row: Claimed) -> OutgoingEmail:
        assert row.invoice is not None and row.recipient is not None
        facts = row.invoice_facts()
        product_id = row.invoice.stripe_product_id
        if facts.product_name is None and product_id and self.product_names:
            facts = replace(facts, product_name=self.product_names(product_id))
        rendered = self.renderer.render(facts)
        return OutgoingEmail(
            notification_id=row.id, stripe_invoice_id=row.stripe_invoice_id, kind=row.kind,
            to=row.recipient, subject=rendered.subject, text=rendered.text,
            html=rendered.html, data=rendered.data,
        )

    def handle(self, row: Claimed) -> DrainResult:
        """Send (or alert) one claimed row and record the outcome."""
        # E-mail rows alert on their first attempt only; an alert-only row is re-alerted if
        # its worker died before recording it (a duplicate alert beats a lost one).
        if row.attempts == 1 or row.kind not in EMAIL_KINDS:
            self._alert_claimed(row)
        if row.kind not in EMAIL_KINDS:  # alert-only rows are done once alerted
            _finish(self.engine, row, "sent", sent_at=self.clock())
            return DrainResult(sent=1)
        if row.recipient is None:
            return self._fail(row, "no recipient: the user has no e-mail and the invoice no "
                                   "customer_email")
        if row.invoice is None:
            return self._fail(row, "invoice not found")
        try:
            message_id = self.sender.send(self._email(row))
        except SendError as exc:
            if not exc.transient:
                return self._fail(row, exc.reason, exc.status)
            return self.retry(row, exc.reason, exc.status)
        _finish(self.engine, row, "sent", message_id=message_id, sent_at=self.clock())
        log.info("notify.sent", notification_id=row.id, kind=row.kind,
                 invoice_id=row.stripe_invoice_id, backend=self.sender.name,
                 message_id=message_id, attempts=row.attempts)
        return DrainResult(sent=1)

    def retry(self, row: Claimed, reason: str, status: int | None) -> DrainResult:
        if should_give_up(row.attempts, self.policy.max_attempts):
            return self._fail(row, f"gave up after {row.attempts} attempts: {reason}", status)
        delay = backoff(row.attempts, base=self.policy.backoff_base,
                        cap=self.policy.backoff_cap, jitter=self.jitter())
        _finish(self.engine, row, "pending", error=reason, next_attempt_at=self.clock() + delay)
        log.warning("notify.retrying", notification_id=row.id, kind=row.kind,
                    invoice_id=row.stripe_invoice_id, attempts=row.attempts, status=status,
                    reason=reason, retry_in_s=round(delay.total_seconds(), 1))
        return DrainResult(retrying=1)

    def release(self, rows: list[Claimed], reason: str) -> None:
        """Give claimed rows back untouched (their attempt is not counted)."""
        with self.engine.begin() as conn:
            conn.execute(text(RELEASE), {
                "ids": [r.id for r in rows], "token": rows[0].token, "error": reason,
                "now": self.clock(),
            })


def drain(
    engine: Engine, sender: Sender, policy: NotifyPolicy, *, clock: Clock,
    limit: int = 1000, renderer: Renderer | None = None, alerts: Alerts | None = None,
    product_names: ProductNames | None = None, jitter: Callable[[], float] = random.random,
    stop: threading.Event | None = None,
) -> DrainResult:
    """Handle up to `limit` due rows once; returns what happened. Never raises for a row.

    Stops early (result.stopped) when the backend refuses the credentials, leaving every
    row pending, since no e-mail could be sent until the configuration is fixed. A set
    `stop` event gives the rest of the batch back at once (for a worker shutting down).
    """
    worker = _Drain(engine, sender, policy, clock, renderer or Renderer(), alerts or Alerts(),
                    product_names, jitter)
    total = _housekeep(engine, policy, clock(), worker.alerts)
    while total.claimed < limit:
        batch = _claim(engine, policy, clock(), min(policy.batch_size, limit - total.claimed))
        if not batch:
            break
        total += DrainResult(claimed=len(batch))
        for index, row in enumerate(batch):
            if stop is not None and stop.is_set():
                worker.release(batch[index:], "worker stopped before sending")
                return total
            try:
                total += worker.handle(row)
            except SenderUnusableError as exc:
                worker.release(batch[index:], exc.message)
                worker.alerts.emit(alert.EMAIL_BACKEND_REFUSED, backend=sender.name,
                                   reason=exc.message, notification_id=row.id)
                return total + DrainResult(stopped=str(exc))
            except Exception as exc:  # a bug must not strand the rest of the batch
                log.exception("notify.row_error", notification_id=row.id, kind=row.kind,
                              invoice_id=row.stripe_invoice_id)
                total += worker.retry(row, f"internal error: {type(exc).__name__}", None)
    log.info("notify.drained", backend=sender.name, **{
        f.name: getattr(total, f.name) for f in fields(total)})
    return total


def preview(engine: Engine, *, clock: Clock, limit: int = 100,
            renderer: Renderer | None = None) -> list[Preview]:
    """What a drain would handle now, with rendered subjects; writes nothing."""
    render = renderer or Renderer()
    with engine.connect() as conn:
        rows = conn.execute(text(PREVIEW), {"now": clock(), "limit": limit}).mappings().all()
    found = []
    for r in rows:
        row = Claimed.of(r, r if r["status"] is not None else None, "")
        subject = (render.render(row.invoice_facts()).subject
                   if row.invoice and row.kind in EMAIL_KINDS else None)
        found.append(Preview(row.id, row.kind, row.stripe_invoice_id, row.recipient, subject))
    return found


def run_worker(
    engine: Engine, sender: Sender, policy: NotifyPolicy, *, clock: Clock,
    stop: threading.Event, poll_interval_s: float = 5.0, refused_pause_s: float = 300.0,
    renderer: Renderer | None = None, alerts: Alerts | None = None,
    product_names: ProductNames | None = None,
) -> DrainResult:
    """Drain until `stop` is set, waiting `poll_interval_s` whenever nothing was due.

    A backend that refuses our credentials pauses the worker for `refused_pause_s`
    instead of spinning; everything stays pending meanwhile.
    """
    render = renderer or Renderer()
    total = DrainResult()
    while not stop.is_set():
        try:
            result = drain(engine, sender, policy, clock=clock, limit=policy.batch_size,
                           renderer=render, alerts=alerts, product_names=product_names,
                           stop=stop)
        except SQLAlchemyError as exc:
            # A database restart must not end a long-running worker; leases cover its rows.
            log.error("notify.database_error", error=f"{type(exc).__name__}: {exc}"[:300])
            stop.wait(poll_interval_s)
            continue
        total += result
        if result.stopped:
            stop.wait(refused_pause_s)
        elif result.claimed < policy.batch_size:
            stop.wait(poll_interval_s)
    return replace(total, stopped=None)
