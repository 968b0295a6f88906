"""The Stripe emulator's bulk seeding: the status mix, invoice states, speed."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from reconcile.emulator import StripeEmulator

START = 1_800_000_000
YEAR = 365 * 86_400


def test_seed_builds_a_realistic_mix() -> None:
    """About 80% active, every status present, each with invoices in the matching state."""
    emu = StripeEmulator(start_time=START)
    report = emu.seed(2000, rng_seed=1)
    subs = emu.objects("subscriptions")
    invoices = {i["id"]: i for i in emu.objects("invoices")}
    statuses = Counter(s["status"] for s in subs)
    assert report.customers == len(subs) == len(emu.objects("customers")) == 2000
    assert report.by_status == dict(statuses)
    assert set(statuses) == {
        "active",
        "trialing",
        "past_due",
        "unpaid",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "paused",
    }
    assert 0.75 < statuses["active"] / 2000 < 0.85
    created = [s["created"] for s in subs]
    assert min(created) >= START - YEAR and max(created) <= START
    assert max(created) - min(created) > 300 * 86_400
    assert any(s["cancel_at_period_end"] for s in subs if s["status"] == "active")
    for sub in subs:
        latest = invoices[sub["latest_invoice"]]
        period_end = sub["items"]["data"][0]["current_period_end"]
        status = sub["status"]
        if status == "past_due":
            assert latest["status"] == "open" and latest["attempt_count"] >= 1
            assert latest["next_payment_attempt"] > START
        elif status == "unpaid":
            assert latest["status"] == "uncollectible"
        elif status == "canceled":
            assert sub["ended_at"] is not None and sub["ended_at"] <= START
            assert sub["canceled_at"] is not None
        elif status == "incomplete":
            assert latest["status"] == "open"
        elif status == "incomplete_expired":
            assert latest["status"] == "void" and sub["ended_at"] is not None
        elif status == "trialing":
            assert sub["trial_end"] > START and latest["amount_due"] == 0
        elif status == "active":
            assert latest["status"] == "paid" and period_end > START
    assert emu.events() == []


def test_seed_is_deterministic_for_a_seed() -> None:
    """The same rng_seed gives the same subscriptions."""
    first, second = StripeEmulator(start_time=START), StripeEmulator(start_time=START)
    first.seed(300, rng_seed=9)
    second.seed(300, rng_seed=9)
    assert first.objects("subscriptions") == second.objects("subscriptions")


def test_seed_mix_and_events_are_options() -> None:
    """A custom mix is honoured; emit_events adds created events inside the retention window."""
    emu = StripeEmulator(start_time=START)
    report = emu.seed(200, rng_seed=4, mix={"active": 1.0}, emit_events=True)
    assert report.by_status == {"active": 200}
    events = emu.events()
    assert len(events) == report.events > 0
    assert all(e["created"] >= START - 30 * 86_400 for e in events)


def test_seeded_subscriptions_renew_and_retry_on_advance() -> None:
    """Advancing a month renews active subscriptions and retries past_due invoices."""
    emu = StripeEmulator(start_time=START)
    emu.seed(500, rng_seed=2)
    emu.advance(timedelta(days=32))
    types = Counter(e["type"] for e in emu.events())
    assert types["invoice.paid"] > 300
    assert types["invoice.payment_failed"] > 0
    subs = emu.objects("subscriptions")
    live = [s for s in subs if s["status"] in ("active", "past_due")]
    assert all(s["items"]["data"][0]["current_period_end"] > emu.now for s in live)


def test_seeded_data_lists_over_http() -> None:
    """All seeded subscriptions come back through the API, 100 per request."""
    with StripeEmulator(start_time=START) as emu:
        emu.seed(1000, rng_seed=3)
        url = urlsplit(emu.url)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        seen, after = 0, ""
        while True:
            conn.request(
                "GET",
                f"/v1/subscriptions?status=all&limit=100{after}",
                headers={"Authorization": f"Bearer {emu.api_key}"},
            )
            body = json.loads(conn.getresponse().read())
            seen += len(body["data"])
            if not body["has_more"]:
                break
            after = f"&starting_after={body['data'][-1]['id']}"
        assert seen == 1000 and emu.request_count("/v1/subscriptions") == 10


def test_seed_100k_timing(capsys: pytest.CaptureFixture[str]) -> None:
    """seed(100_000) completes; its speed is reported, not asserted."""
    emu = StripeEmulator(start_time=START)
    started = time.perf_counter()
    report = emu.seed(100_000, rng_seed=1)
    seconds = time.perf_counter() - started
    assert report.subscriptions == 100_000
    with capsys.disabled():
        print(
            f"\nseed(100_000): {seconds:.1f}s, {report.subscriptions / seconds:,.0f} subs/s, "
            f"{report.invoices:,} invoices"
        )
