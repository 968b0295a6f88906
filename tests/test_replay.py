"""`replay-events`: missed events are applied oldest first through the webhook's own path;
recorded ones are skipped; the command line reports counts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from cli import main
from reconcile.database import make_engine
from reconcile.ledger import LedgerOptions
from reconcile.replay import ReplayReport, render, replay_events
from tests import payloads as p
from tests.dbutil import add_user, dump, invoice_row, subscription_row, user_status
from tests.fakes import FakePage, FakeStripe
from tests.test_webhook_support import (
    API_KEY,
    StripeStub,
    at,
    customer_of,
    event,
    ledger,
    load_lifecycle,
    post,
    receiver,
    stripe_stub,
)

SINCE = at(1790000000)


@dataclass
class EventStripe(FakeStripe):
    """FakeStripe that also lists events, newest first, as GET /v1/events does."""

    events: list[dict[str, Any]] = field(default_factory=list)
    listed_types: list[str] = field(default_factory=list)

    def list_events(self, *, types: Sequence[str], created_gte: datetime) -> Iterator[FakePage]:
        self.listed_types = list(types)
        wanted = [e for e in self.events
                  if e["type"] in types and e["created"] >= created_gte.timestamp()]
        return self._pages(sorted(wanted, key=lambda e: -e["created"]))


@pytest.fixture
def app_engine(db_url: str) -> Iterator[Engine]:
    """An engine like the command's (staging tables installed)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def replay(engine: Engine, fake: EventStripe, *, dry_run: bool = False) -> ReplayReport:
    options = LedgerOptions(refetch="never", livemode=False, source="replay")
    return replay_events(engine, fake, since=SINCE, options=options, dry_run=dry_run)


def test_replay_after_a_gap_applies_only_missed_events_oldest_first(
    db_url: str, app_engine: Engine
) -> None:
    """Two events arrived, four were missed: replay applies the four, in order, once."""
    events = load_lifecycle("Gap")
    fake = EventStripe(events=[*events, event("customer.created", {"id": "x"}, created=p.T0)])
    fake.page_size = 2  # several pages
    with receiver(db_url) as (client, engine):
        add_user(engine, customer_of("Gap"))
        for body in events[:2]:
            assert post(client, body).json()["outcome"] == "applied"
    report = replay(app_engine, fake)
    assert (report.listed, report.already_recorded, report.pending) == (6, 2, 4)
    assert report.outcomes == {"applied": 4}  # newest first would leave older ones stale
    assert "customer.created" not in fake.listed_types
    assert subscription_row(app_engine, "sub_Gapn1")["status"] == "canceled"
    assert invoice_row(app_engine, "in_Gapn1")["status"] == "paid"
    assert user_status(app_engine, customer_of("Gap")) == "canceled"
    sources = ledger(app_engine)
    assert len(sources) == 6 and set(sources.values()) == {"applied"}
    again = replay(app_engine, fake)
    assert (again.already_recorded, again.pending, again.outcomes) == (6, 0, {})


def test_replay_dry_run_counts_and_writes_nothing(app_engine: Engine) -> None:
    """--dry-run lists and counts what would be replayed, and changes nothing."""
    fake = EventStripe(events=load_lifecycle("Dry"))
    before = dump(app_engine, ("subscriptions", "invoices", "stripe_events"))
    report = replay(app_engine, fake, dry_run=True)
    assert (report.listed, report.pending, report.outcomes) == (6, 6, {})
    assert dump(app_engine, ("subscriptions", "invoices", "stripe_events")) == before
    assert "would be replayed" in render(report)


def test_replay_skips_unreadable_events_and_goes_on(app_engine: Engine) -> None:
    """An event whose object cannot be read is counted invalid; the others are applied."""
    created = int(SINCE.timestamp()) + 60
    broken = event("customer.subscription.updated", {"id": "sub_bad", "object": "subscription"},
                   created=created)
    good = event("customer.subscription.updated", p.subscription("sub_ok", "cus_1"),
                 created=created)
    report = replay(app_engine, EventStripe(events=[broken, good]))
    assert (report.invalid, report.outcomes) == (1, {"applied": 1})
    assert set(ledger(app_engine)) == {good["id"]}


def test_replay_command_over_http(db_url: str, engine: Engine) -> None:
    """`reconcile replay-events` lists from Stripe over HTTP and reports its counts."""
    now = int(datetime.now(UTC).timestamp())
    recent = [event("customer.subscription.created", p.subscription(f"sub_{n}", "cus_1"),
                    created=now - 3600 * n) for n in range(3)]
    runner = CliRunner()
    with stripe_stub(StripeStub(events=recent)) as base, runner.isolated_filesystem():
        env = {"DATABASE_URL": db_url, "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": base,
               "STRIPE_MAX_NETWORK_RETRIES": "0", "WEBHOOK_REFETCH": "never"}
        dry = runner.invoke(main, ["replay-events", "--since", "1d", "--dry-run"], env=env)
        assert dry.exit_code == 0, dry.output
        assert "3 listed" in dry.output and "3 event(s) would be replayed" in dry.output
        done = runner.invoke(main, ["replay-events", "--since", "1d"], env=env)
        assert done.exit_code == 0, done.output
        assert "replayed 3 event(s): applied 3" in done.output
    assert len(dump(engine)["subscriptions"]) == 3
    assert set(ledger(engine).values()) == {"applied"}


@pytest.mark.parametrize(("since", "message"), [("31d", "30 days"), ("3x", "3d or 12h"),
                                                ("1d,2d", "3d or 12h")])
def test_replay_command_rejects_bad_windows(since: str, message: str) -> None:
    """--since beyond Stripe's 30-day retention, or not a duration, is a usage error."""
    result = CliRunner().invoke(main, ["replay-events", "--since", since])
    assert result.exit_code == 2 and message in result.output

