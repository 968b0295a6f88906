"""`retry-payments`: charge each due invoice once, never twice, and record every attempt.

1. SQL selects candidates in one pass (`retry_store.select_candidates`): open unpaid
   invoices of subscriptions we hold as `active`/`past_due` whose next `RETRY_SCHEDULE`
   slot has come, counted from creation (a superset), plus attempts a crash left `pending`.
2. Each candidate is re-read from Stripe (invoice and subscription) and judged by
   `retry_policy.decide` on that fresh state: our mirror may be an hour old, a charge not.
3. A `pending` row is committed before the charge, with a key derived from invoice and
   attempt; a rerun after a crash resends that key and Stripe replays its first answer.
4. The invoice as it stands after the charge goes through the one apply path with the
   matching event type, so state and failure notifications follow the usual rules.

A decline is an outcome and the run goes on; Stripe being unreachable stops the run (the
pending row keeps the key for next time).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import Engine

from config import Settings
from reconcile import guards, retry_store
from reconcile.database import ensure_migrated, make_engine
from reconcile.errors import ReconcileError, SafetyValveError, StripeRequestError
from reconcile.jobs import make_gateway
from reconcile.retry_policy import (
    ChargeFacts,
    decide,
    facts_from_payloads,
    idempotency_key,
    locally_canceled,
    policy_refusal,
)
from reconcile.retry_store import Candidate, Finished
from reconcile.snapshot import (
    InvoiceState,
    PayloadError,
    SubscriptionState,
    invoice_from_payload,
    invoice_subscription_id,
    subscription_from_payload,
)
from reconcile.source import AccountLike, RetrievedLike, StatsLike
from reconcile.stripe_wire import PayOutcome, Retrieved

log = structlog.get_logger("reconcile.retries")

DEFAULT_MAX_CHARGES = 100


class ChargesRefusedError(ReconcileError):
    """The settings do not allow this run to charge (exit 2, like a configuration error)."""

    exit_code = 2


class PaymentGateway(Protocol):
    """The Stripe calls a retry run makes (StripeGateway implements it)."""

    @property
    def stats(self) -> StatsLike: ...
    def account(self) -> AccountLike: ...
    def retrieve_invoice(self, invoice_id: str) -> RetrievedLike | None: ...
    def retrieve_subscription(self, subscription_id: str) -> RetrievedLike | None: ...
    def pay_invoice(self, invoice_id: str, *, idempotency_key: str) -> PayOutcome: ...


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """What the flags and settings decided."""

    schedule: tuple[timedelta, ...]
    dry_run: bool = False
    max_charges: int = DEFAULT_MAX_CHARGES
    notify_max_age: timedelta = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One charge made (or, in a dry run, `would_charge`)."""

    invoice_id: str
    subscription_id: str | None
    attempt: int
    outcome: str
    amount: int
    currency: str
    code: str | None = None
    decline_code: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Skipped:
    """A candidate not charged, and why (a `retry_policy.Reason`, `invoice_missing`, `error`)."""

    invoice_id: str
    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a run did."""

    dry_run: bool
    candidates: int
    attempts: tuple[Attempt, ...]
    skipped: tuple[Skipped, ...]
    stripe_requests: int
    rate_limited: int
    duration_s: float

    @property
    def outcomes(self) -> dict[str, int]:
        """Charges by outcome (`would_charge` in a dry run)."""
        return dict(sorted(Counter(a.outcome for a in self.attempts).items()))


def _states(
    invoice: RetrievedLike | None, sub: RetrievedLike | None
) -> tuple[list[InvoiceState], SubscriptionState | None]:
    invoices = [invoice_from_payload(invoice.object, invoice.observed_at)] if invoice else []
    return invoices, subscription_from_payload(sub.object, sub.observed_at) if sub else None


class _Run:
    """One run's dependencies; `handle` judges and charges one candidate."""

    def __init__(self, engine: Engine, gateway: PaymentGateway, options: RetryOptions) -> None:
        self.engine, self.gateway, self.options = engine, gateway, options

    def handle(self, c: Candidate) -> Attempt | Skipped:
        found = self.gateway.retrieve_invoice(c.invoice_id)
        if found is None:
            self._settle(c, None, None, None)
            return Skipped(c.invoice_id, "invoice_missing")
        sub_id = invoice_subscription_id(found.object)
        sub = self.gateway.retrieve_subscription(sub_id) if sub_id else None
        facts = facts_from_payloads(
            found.object, found.observed_at, sub.object if sub else None,
            sub.observed_at if sub else None, canceled_locally=locally_canceled(c.local_status),
        )
        # Stripe's clock decides what is due and what has ended, like everything else.
        decision = decide(
            facts, attempts_made=c.made, schedule=self.options.schedule, now=found.observed_at
        )
        skip = Skipped(c.invoice_id, decision.reason, decision.detail or (
            decision.due_at.isoformat() if decision.due_at else None))
        if self.options.dry_run:
            return _attempt(c, facts, "would_charge") if decision.eligible else skip
        if decision.eligible:
            return self._charge(c, facts, sub)
        if c.resumed and facts.invoice.status != "open":
            # A crash hid what our attempt did. Stripe cannot charge a settled invoice, so
            # resending the key is safe: it replays our success, or refuses harmlessly.
            paid = self.gateway.pay_invoice(c.invoice_id, idempotency_key=_key(c))
            if paid.status == "succeeded":
                return self._record(c, facts, sub, paid)
        self._settle(c, None, found, sub)
        return skip

    def _charge(self, c: Candidate, facts: ChargeFacts, sub: RetrievedLike | None) -> Attempt:
        retry_store.record_pending(self.engine, c, facts.invoice, _key(c))
        paid = self.gateway.pay_invoice(c.invoice_id, idempotency_key=_key(c))
        return self._record(c, facts, sub, paid)

    def _record(
        self, c: Candidate, facts: ChargeFacts, sub: RetrievedLike | None, paid: PayOutcome
    ) -> Attempt:
        after: RetrievedLike | None
        if paid.invoice is not None:
            after = Retrieved(object=paid.invoice, observed_at=paid.observed_at)
        else:  # a refusal carries no invoice, yet its attempt count and next attempt changed
            after = self.gateway.retrieve_invoice(c.invoice_id)
        sub_id = facts.invoice.stripe_subscription_id
        if paid.status == "succeeded" and sub_id:
            # Paying may reactivate the subscription; mirror that now, not at the next run.
            sub = self.gateway.retrieve_subscription(sub_id) or sub
        result = _attempt(c, facts, paid.status, paid)
        finished = Finished(paid.status, paid.code, paid.decline_code, paid.replayed)
        self._settle(c, finished, after, sub)
        log.info(
            "retry.charge_attempted", invoice_id=c.invoice_id, attempt=c.attempt,
            outcome=paid.status, code=paid.code, decline_code=paid.decline_code,
            replayed=paid.replayed, resumed=c.resumed,
        )
        return result

    def _settle(
        self, c: Candidate, finished: Finished | None, invoice: RetrievedLike | None,
        sub: RetrievedLike | None,
    ) -> None:
        if self.options.dry_run:
            return
        invoices, subscription = _states(invoice, sub)
        retry_store.settle(
            self.engine, c, finished=finished, invoices=invoices, subscription=subscription,
            notify_max_age=self.options.notify_max_age,
        )


def _key(c: Candidate) -> str:
    return idempotency_key(c.invoice_id, c.attempt)


def _attempt(
    c: Candidate, facts: ChargeFacts, outcome: str, paid: PayOutcome | None = None
) -> Attempt:
    inv = facts.invoice
    return Attempt(
        invoice_id=c.invoice_id, subscription_id=inv.stripe_subscription_id, attempt=c.attempt,
        # A settled invoice (a crashed attempt resolved) owes nothing now; show what it cost.
        outcome=outcome, amount=inv.amount_remaining or inv.amount_due, currency=inv.currency,
        code=paid.code if paid else None, decline_code=paid.decline_code if paid else None,
        replayed=paid.replayed if paid else False,
    )


def run_retries(
    engine: Engine, gateway: PaymentGateway, options: RetryOptions,
    *, clock: Callable[[], datetime],
) -> RetryResult:
    """One retry run. Raises LockHeldError, SafetyValveError, AccountMismatchError, or
    StripeUnavailableError after recording every attempt finished so far."""
    started = time.monotonic()
    with retry_store.run_lock(engine) as conn:
        account = gateway.account()
        with conn.begin():
            guards.check_account(conn, account.id, account.livemode, remember=False)
            candidates = retry_store.select_candidates(conn, options.schedule, clock())
        if len(candidates) > options.max_charges:
            raise SafetyValveError(
                f"{len(candidates)} invoices are due for a charge, more than --max-charges="
                f"{options.max_charges}; nothing was charged",
                hint="review `reconcile retry-payments --dry-run`, then rerun with a higher "
                "--max-charges",
            )
        run = _Run(engine, gateway, options)
        done: list[Attempt | Skipped] = []
        for candidate in candidates:
            try:
                done.append(run.handle(candidate))
            except (StripeRequestError, PayloadError) as exc:
                # This invoice alone is refused or malformed; its pending row (if any) keeps
                # its key, and the other invoices still get their turn.
                log.warning("retry.invoice_error", invoice_id=candidate.invoice_id, error=str(exc))
                done.append(Skipped(candidate.invoice_id, "error", str(exc)))
    result = RetryResult(
        dry_run=options.dry_run, candidates=len(candidates),
        attempts=tuple(d for d in done if isinstance(d, Attempt)),
        skipped=tuple(d for d in done if isinstance(d, Skipped)),
        stripe_requests=gateway.stats.requests, rate_limited=gateway.stats.rate_limited,
        duration_s=round(time.monotonic() - started, 3),
    )
    log.info(
        "retry.run_finished", dry_run=options.dry_run, candidates=result.candidates,
        outcomes=result.outcomes, skipped=dict(Counter(s.reason for s in result.skipped)),
        stripe_requests=result.stripe_requests, duration_s=result.duration_s,
    )
    return result


def retry_payments_once(
    settings: Settings, *, dry_run: bool, max_charges: int = DEFAULT_MAX_CHARGES,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RetryResult:
    """One retry run against the configured database and Stripe account."""
    if settings.database_url is None:
        raise ValueError("settings were loaded without the 'database' group")
    refusal = policy_refusal(
        policy=settings.retry_policy, explicit=settings.retry_policy_explicit,
        livemode=settings.stripe_livemode, schedule=settings.retry_schedule, dry_run=dry_run,
    )
    if refusal is not None:
        raise ChargesRefusedError(refusal, hint="`reconcile doctor` shows the retry settings")
    engine = make_engine(settings.database_url)
    try:
        ensure_migrated(engine)
        options = RetryOptions(
            schedule=settings.retry_schedule, dry_run=dry_run, max_charges=max_charges,
            notify_max_age=timedelta(hours=settings.notify_max_age_hours),
        )
        return run_retries(engine, make_gateway(settings), options, clock=clock)
    finally:
        engine.dispose()
