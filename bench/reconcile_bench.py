"""Full reconciliation against the emulator: wall time, objects/s, requests, peak RSS, and the
database phase set-based versus one ORM round trip per object.

    python -m bench.reconcile_bench --subs 10000 100000

Each size gets a fresh embedded PostgreSQL and an emulator (in its own process) seeded with
that many subscriptions (and their invoices). After a first sync, about 1% drift is planted
with SQL; then a dry run, a real run and a second dry run are timed as separate `reconcile`
processes (peak RSS is theirs alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, String, create_engine, make_url, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.support import RECONCILE, emulator, machine, timed
from reconcile import staging
from reconcile.apply import reconcile_staged
from reconcile.database import make_engine
from reconcile.migrate import upgrade
from reconcile.pg_embedded import EmbeddedPostgres
from reconcile.snapshot import SubscriptionState, subscription_from_payload
from reconcile.stripe_api import StripeGateway, make_client


class Base(DeclarativeBase):
    """ORM base for the per-object comparison only."""


class Sub(Base):
    """The subscriptions table as a per-object sync tool would map it."""

    __tablename__ = "subscriptions"
    # Mapped on the natural key, as sync tools do, so `merge` looks rows up by Stripe id.
    stripe_subscription_id: Mapped[str] = mapped_column(String, primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean)
    stripe_price_id: Mapped[str | None] = mapped_column(String)
    stripe_created: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stripe_observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# About 1% of rows drift. Local edits also age the row's observation time, as drift that
# happened an hour ago would (a same-second observation is, by design, not "newer").
AGED = "stripe_observed_at = stripe_observed_at - interval '1 hour'"
PLANT = [
    f"UPDATE subscriptions SET status = 'unpaid', {AGED} WHERE id % 250 = 1 AND status = 'active'",
    "UPDATE subscriptions SET current_period_end = current_period_end - interval '30 days', "
    f"{AGED} WHERE id % 500 = 2",
    f"UPDATE subscriptions SET cancel_at_period_end = NOT cancel_at_period_end, {AGED} "
    "WHERE id % 1000 = 3",
    f"UPDATE invoices SET amount_remaining = amount_remaining + 100, {AGED} WHERE id % 500 = 4",
    "UPDATE users SET subscription_status = NULL WHERE id % 1000 = 5",
    "DELETE FROM invoices WHERE id % 1000 = 6",
    "DELETE FROM subscriptions WHERE id % 2000 = 7",
]


def _env(db_url: str, emu_url: str, key: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": db_url, "STRIPE_API_BASE": emu_url,
            "STRIPE_API_KEY": key, "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
            "RECONCILE_MAX_CHANGES": "100000000"}


def _requests(emu_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{emu_url}/_emulator/requests") as resp:
        counts: dict[str, int] = json.loads(resp.read())
    urllib.request.urlopen(
        urllib.request.Request(f"{emu_url}/_emulator/requests/reset", method="POST")
    ).read()
    return counts


def _states(emu_url: str, key: str) -> list[SubscriptionState]:
    gateway = StripeGateway(make_client(key, emu_url, 0), api_key_livemode=False)
    return [subscription_from_payload(o, page.observed_at)
            for page in gateway.list_subscriptions() for o in page.objects]


def _clone(admin_url: str, source: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _set_based(db_url: str, states: list[SubscriptionState]) -> tuple[float, int]:
    """Stage with COPY, diff and apply in SQL, commit."""
    engine = make_engine(db_url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # connection set up outside the timing
        conn.commit()
        started = time.perf_counter()
        with conn.begin():
            staging.stage_subscriptions(conn, states)
            staging.analyze(conn)
            applied = reconcile_staged(conn)
        seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, applied.subscriptions_inserted + applied.subscriptions_updated


def _per_object(db_url: str, states: list[SubscriptionState]) -> tuple[float, int]:
    """One ORM merge and commit per object, the way per-object sync tools write."""
    engine = create_engine(db_url)
    changed = 0
    with Session(engine, expire_on_commit=False) as session:
        session.execute(text("SELECT 1"))
        session.commit()
        started = time.perf_counter()
        for s in states:
            merged = session.merge(Sub(
                stripe_subscription_id=s.stripe_subscription_id,
                stripe_customer_id=s.stripe_customer_id, status=s.status,
                current_period_end=s.current_period_end, end_date=s.end_date,
                cancel_at_period_end=s.cancel_at_period_end, stripe_price_id=s.stripe_price_id,
                stripe_created=s.stripe_created, stripe_observed_at=s.observed_at,
            ))
            changed += merged in session.dirty
            session.commit()
        seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, changed


def _same_subscriptions(url_a: str, url_b: str) -> bool:
    """Both ways of writing leave the same mirrored fields."""
    cols = ("stripe_subscription_id, status, current_period_end, end_date, "
            "cancel_at_period_end, stripe_price_id")
    rows = []
    for url in (url_a, url_b):
        engine = create_engine(url)
        with engine.connect() as conn:
            rows.append(conn.execute(text(f"SELECT {cols} FROM subscriptions ORDER BY 1")).all())
        engine.dispose()
    return rows[0] == rows[1]


# Production databases make commits durable, on a disk: measuring with fsync off (or on a RAM
# disk) would flatter the per-object way (one commit per object) far more than the set-based
# one (one commit). So the bench's PostgreSQL runs with durable settings under /var/tmp.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
ON_DISK = Path("/var/tmp")


def bench(n: int) -> dict[str, Any]:
    """All figures for one size."""
    with EmbeddedPostgres(settings=DURABLE, runtime_parent=ON_DISK) as pg, emulator(n) as emu:
        upgrade(pg.url)
        env = _env(pg.url, emu.url, emu.api_key)
        first = timed([*RECONCILE, "run", "--force", "--format", "json"], env)
        engine = create_engine(pg.url)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (email, stripe_customer_id) SELECT DISTINCT "
                "stripe_customer_id || '@example.com', stripe_customer_id FROM subscriptions"))
        timed([*RECONCILE, "run", "--force"], env)
        with engine.begin() as conn:
            for sql in PLANT:
                conn.execute(text(sql))
        _requests(emu.url)
        dry = timed([*RECONCILE, "run", "--dry-run", "--format", "json"], env)
        dry_requests = _requests(emu.url)
        real = timed([*RECONCILE, "run", "--force", "--format", "json"], env)
        again = timed([*RECONCILE, "run", "--dry-run", "--format", "json"], env)
        with engine.begin() as conn:  # replant for the database-phase comparison
            for sql in PLANT[:3]:
                conn.execute(text(sql))
        engine.dispose()
        states = _states(emu.url, emu.api_key)
        source = make_url(pg.url).database or "postgres"
        set_url = _clone(pg.url, source, "bench_set")
        obj_url = _clone(pg.url, source, "bench_obj")
        set_s, set_changed = _set_based(set_url, states)
        obj_s, obj_changed = _per_object(obj_url, states)
        same = _same_subscriptions(set_url, obj_url)
    dry_doc, real_doc, again_doc = (json.loads(t.stdout) for t in (dry, real, again))
    objects = real_doc["objects_listed"]
    pages = sum(v for k, v in dry_requests.items() if k.startswith(("/v1/subscriptions",
                                                                     "/v1/invoices")))
    return {
        "n": n, "objects": objects, "first_sync_s": first.seconds,
        "dry_s": dry.seconds, "dry_rss": dry.peak_rss_mb, "run_s": real.seconds,
        "run_rss": real.peak_rss_mb, "objects_per_s": objects / real.seconds,
        "drift": dry_doc["changed_rows"], "corrected": real_doc["rows_written"],
        "after": again_doc["changed_rows"], "requests": dry_doc["stripe_requests"],
        "min_pages": math.ceil(n / 100), "listing_requests": pages,
        "set_s": set_s, "set_changed": set_changed, "obj_s": obj_s, "obj_changed": obj_changed,
        "same": same,
    }


def main() -> None:
    """Run the sizes asked for and print Markdown rows for bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print("| subs | objects | dry run | real run | objects/s | peak RSS dry/real | drift -> "
          "after | requests (listing) | DB phase set-based | per-object ORM | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.subs:
        r = bench(n)
        print(
            f"| {r['n']:,} | {r['objects']:,} | {r['dry_s']:.1f} s | {r['run_s']:.1f} s | "
            f"{r['objects_per_s']:,.0f} | {r['dry_rss']:.0f} / {r['run_rss']:.0f} MB | "
            f"{r['drift']} -> {r['after']} | {r['requests']} ({r['listing_requests']}) | "
            f"{r['set_s']:.2f} s ({r['set_changed']} rows) | {r['obj_s']:.1f} s "
            f"({r['obj_changed']} rows) | {r['obj_s'] / r['set_s']:.0f}x"
            f"{'' if r['same'] else ' (RESULTS DIFFER)'} |", flush=True,
        )
    print(f"\n(first sync, {datetime.now(UTC):%Y-%m-%d}: see JSON per run)")


if __name__ == "__main__":
    main()
