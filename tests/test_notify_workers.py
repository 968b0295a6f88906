"""Several workers on one outbox: a killed worker's row, and 1,000 rows drained by two."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from reconcile.notify import DrainResult, NotifyPolicy, drain, run_worker
from tests.fake_sendgrid import FakeSendGrid, fake_sendgrid
from tests.notify_support import (
    SENDGRID_KEY,
    Clock,
    apply_invoice,
    clock,
    failed_invoice,
    make_due,
    rows,
    sendgrid_sender,
)

OUR_PREFIXES = ("STRIPE_", "RECONCILE_", "WEBHOOK_", "EMAIL_", "SENDGRID_", "NOTIFY_",
                "DATABASE_URL", "ALERT_", "LOG_")


def wait_for(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def worker_env(db_url: str, fake: FakeSendGrid) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
    env.update(DATABASE_URL=db_url, EMAIL_BACKEND="sendgrid", EMAIL_FROM="billing@example.com",
               SENDGRID_API_KEY=SENDGRID_KEY, SENDGRID_API_BASE=fake.url, LOG_FORMAT="json")
    # The subprocess runs elsewhere (no .env there) but must import this checkout.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def test_worker_killed_after_claiming_is_sent_once_by_another(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """`reconcile worker` killed mid-send: after the lease another worker sends it, once."""
    apply_invoice(engine, failed_invoice("in_1"))
    make_due(engine)
    with fake_sendgrid() as fake:
        fake.hold()
        proc = subprocess.Popen(
            [sys.executable, "-c", "from cli import main; main()", "worker",
             "--poll-interval", "0.2"],
            cwd=tmp_path, env=worker_env(db_url, fake),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: fake.held == 1 or proc.poll() is not None)
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            claimed = rows(engine)[0]
            assert (claimed["status"], claimed["attempts"]) == ("sending", 1)
        finally:
            proc.kill()
            proc.communicate()
        fake.release(503)  # the dead worker's request never reached "accepted"
        wait_for(lambda: len(fake.recorded) == 1)
        now = Clock(datetime.now(UTC))
        assert drain(engine, sendgrid_sender(fake.url), NotifyPolicy(), clock=now).claimed == 0
        now.advance(NotifyPolicy().lease + timedelta(seconds=1))
        result = drain(engine, sendgrid_sender(fake.url), NotifyPolicy(), clock=now)
        assert result.sent == 1
        assert [r.notification_id for r in fake.accepted] == [str(claimed["id"])]
    row = rows(engine)[0]
    assert (row["status"], row["attempts"]) == ("sent", 2)


def seed(engine: Engine, count: int) -> None:
    """`count` failed invoices with a due notification each, in two set-based statements."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO invoices (stripe_invoice_id, stripe_customer_id, status, amount_due,
                   amount_remaining, currency, attempt_count, hosted_invoice_url,
                   customer_email, stripe_observed_at, payment_failed_at)
            SELECT 'in_' || g, 'cus_' || g, 'open', 1500, 1500, 'usd', 1,
                   'https://invoice.stripe.com/i/in_' || g, 'c' || g || '@example.com',
                   now(), now()
              FROM generate_series(1, :n) g"""), {"n": count})
        conn.execute(text("""
            INSERT INTO notifications (kind, stripe_invoice_id, stripe_customer_id, recipient,
                   status, next_attempt_at, failed_at)
            SELECT 'payment_failed', stripe_invoice_id, stripe_customer_id, customer_email,
                   'pending', now() - interval '1 second', now() FROM invoices"""))


def test_two_workers_drain_1000_rows_each_sent_exactly_once(db_url: str, engine: Engine) -> None:
    """Two concurrent workers share 1,000 rows: every row is sent exactly once."""
    seed(engine, 1000)
    results: list[DrainResult] = []
    with fake_sendgrid() as fake:

        def work() -> None:
            own = create_engine(db_url, pool_size=2)
            try:
                results.append(drain(own, sendgrid_sender(fake.url), NotifyPolicy(),
                                     clock=clock(), limit=10_000))
            finally:
                own.dispose()

        threads = [threading.Thread(target=work) for _ in range(2)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.perf_counter() - started
        sent_ids = [r.notification_id for r in fake.accepted]
    print(f"\ntwo workers drained 1000 rows in {elapsed:.2f}s "
          f"({[r.sent for r in results]} each)")
    assert len(sent_ids) == 1000 and len(set(sent_ids)) == 1000
    assert sorted(r.sent for r in results) != [0, 1000], "both workers should have worked"
    assert sum(r.sent for r in results) == 1000
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT status, count(*) FROM notifications GROUP BY status")).all() == [("sent", 1000)]


def test_worker_loop_sends_and_stops_when_asked(engine: Engine) -> None:
    """run_worker keeps draining until its stop event is set."""
    with fake_sendgrid() as fake:
        stop = threading.Event()
        outcome: list[DrainResult] = []
        thread = threading.Thread(target=lambda: outcome.append(run_worker(
            engine, sendgrid_sender(fake.url), NotifyPolicy(), clock=clock(), stop=stop,
            poll_interval_s=0.05)))
        thread.start()
        apply_invoice(engine, failed_invoice("in_1"))
        wait_for(lambda: len(fake.accepted) == 1)
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and outcome[0].sent == 1


def test_a_stopping_worker_gives_its_batch_back(engine: Engine) -> None:
    """A drain told to stop sends nothing more and leaves claimed rows pending, unattempted."""
    seed(engine, 3)
    stop = threading.Event()
    stop.set()
    with fake_sendgrid() as fake:
        result = drain(engine, sendgrid_sender(fake.url), NotifyPolicy(), clock=clock(),
                       stop=stop)
    assert (result.claimed, result.sent, fake.recorded) == (3, 0, [])
    assert {(r["status"], r["attempts"]) for r in rows(engine)} == {("pending", 0)}
