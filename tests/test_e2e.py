"""The whole system over HTTP: the Stripe emulator, `reconcile run`, the webhook receiver under
uvicorn, the outbox drained to a fake SendGrid, and `reconcile demo` as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text

from cli import main
from config import Settings, load_settings
from reconcile.demo import NEXT_HEADING, STEPS
from reconcile.demo_drift import GONE_INVOICE, GONE_SUBSCRIPTION, failed_invoices_of, plant_drift
from reconcile.demo_server import serving
from reconcile.demo_world import (
    DEMO_DIR_ENV,
    DEMO_MIX,
    DemoError,
    DemoPaths,
    add_users,
    demo_dir,
    demo_directory,
)
from reconcile.emulator import StripeEmulator
from reconcile.jobs import reconcile_once
from reconcile.logging import configure_logging
from reconcile.notify import drain
from reconcile.notify_jobs import Notifier, utc_now
from reconcile.notify_policy import ENDED_SUBSCRIPTION_STATUSES, PAYMENT_FAILED_HOLD, unpaid_kind
from reconcile.pg_embedded import default_runtime_parent
from reconcile.policy import derive_user_status
from reconcile.snapshot import (
    invoice_from_payload,
    invoice_subscription_id,
    subscription_from_payload,
)
from reconcile.webhook import WEBHOOK_PATH, app_from_settings
from tests.fake_sendgrid import FakeSendGrid, fake_sendgrid

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_test_e2e_emulator_00000000000"
SECRET = "whsec_e2e_0123456789abcdefghijklmn"
CUSTOMERS = 200
# Shorter than NOTIFY_MAX_AGE_HOURS (no failure in it is too old to e-mail about) and than
# the first payment retry (3 days), so a renewal that fails in it is still owed at the end.
WINDOW = timedelta(hours=70)
DECLINING = "pm_card_chargeDeclined"
TRIALS = 4  # new customers during the test; three of their cards decline
SUB_FIELDS = ("status", "current_period_end", "end_date", "cancel_at_period_end",
              "stripe_price_id")
INVOICE_FIELDS = ("status", "amount_due", "amount_remaining", "attempt_count")


def _settings(db_url: str, emu: StripeEmulator, sendgrid: FakeSendGrid) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": emu.url,
        "STRIPE_MAX_NETWORK_RETRIES": "2",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "EMAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": "SG.e2e.notarealkey",
        "SENDGRID_API_BASE": sendgrid.url,
        "EMAIL_FROM": "billing@example.com",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }


def _make_changes(emu: StripeEmulator, engine: Engine) -> set[str]:
    """A batch of changes in Stripe: new customers on one-day trials, cards that will decline
    at renewal, cancellations, price changes, invoices paid out of band. Returns the
    subscriptions whose renewal in the window will fail."""
    now, end = emu.now, emu.now + int(WINDOW.total_seconds())
    states = [subscription_from_payload(s, datetime.now(UTC))
              for s in sorted(emu.objects("subscriptions"), key=lambda s: str(s["id"]))]
    prices = sorted({s.stripe_price_id for s in states if s.stripe_price_id})
    # New sign-ups whose trials end inside the window: failures that do not depend on
    # where the calendar puts the seeded renewals.
    failing: set[str] = set()
    for n in range(TRIALS):
        customer = str(emu.create_customer(email=f"trial{n}@example.com")["id"])
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (email, stripe_customer_id) VALUES (:e, :c)"),
                         {"e": f"trial{n}@example.com", "c": customer})
        sub = emu.create_subscription(customer, prices[0], trial_days=1)
        if n % 4:
            emu.set_default_payment_method(customer, DECLINING)
            failing.add(str(sub["id"]))
    active = [s for s in states if s.status == "active" and not s.cancel_at_period_end]
    renewing = [s for s in active if s.current_period_end
                and now < s.current_period_end.timestamp() < end]
    for s in renewing[::2]:
        emu.set_default_payment_method(s.stripe_customer_id, DECLINING)
        failing.add(s.stripe_subscription_id)
    others = [s for s in active if s not in renewing]
    for s in others[:2]:
        emu.cancel_subscription(s.stripe_subscription_id)
    for s in others[2:4]:
        emu.update_subscription(s.stripe_subscription_id, cancel_at_period_end=True)
    for s in others[4:6]:
        other = next(p for p in prices if p != s.stripe_price_id)
        emu.update_subscription(s.stripe_subscription_id, price=other)
    owed = sorted((i for i in emu.objects("invoices") if i["status"] == "open"),
                  key=lambda i: str(i["id"]))
    for invoice in owed[:2]:
        emu.set_invoice_status(str(invoice["id"]), "paid")
    return failing


def _mismatches(
    engine: Engine, emu: StripeEmulator, mirrored_since: int, registered: int
) -> list[str]:
    """Every way the database differs from the emulator (empty when they agree)."""
    seen = datetime.now(UTC)
    problems: list[str] = []
    with engine.connect() as conn:
        subs = {r["stripe_subscription_id"]: r for r in conn.execute(text(
            "SELECT * FROM subscriptions")).mappings()}
        invoices = {r["stripe_invoice_id"]: r for r in conn.execute(text(
            "SELECT * FROM invoices")).mappings()}
        users = list(conn.execute(text("SELECT * FROM users")).mappings())
    for payload in emu.objects("subscriptions"):
        want = subscription_from_payload(payload, seen)
        row = subs.pop(want.stripe_subscription_id, None)
        if row is None:
            problems.append(f"{want.stripe_subscription_id}: missing")
            continue
        problems += [f"{want.stripe_subscription_id}.{f}: {row[f]} != {getattr(want, f)}"
                     for f in SUB_FIELDS if row[f] != getattr(want, f)]
    assert set(subs) == {GONE_SUBSCRIPTION} and subs[GONE_SUBSCRIPTION]["status"] == "canceled"
    for payload in emu.objects("invoices"):
        inv = invoice_from_payload(payload, seen)
        row = invoices.pop(inv.stripe_invoice_id, None)
        created = inv.created.timestamp() if inv.created is not None else 0
        # Listed by the run (unsettled, or within its lookback), or announced by a webhook.
        must_have = (inv.status in ("open", "uncollectible")
                     or created >= mirrored_since or created >= registered)
        if row is None:
            problems += [f"{inv.stripe_invoice_id}: missing"] if must_have else []
            continue
        problems += [f"{inv.stripe_invoice_id}.{f}: {row[f]} != {getattr(inv, f)}"
                     for f in INVOICE_FIELDS if row[f] != getattr(inv, f)]
    assert set(invoices) == {GONE_INVOICE} and invoices[GONE_INVOICE]["status"] == "deleted"
    statuses: dict[str, list[str]] = {}
    for row in subs.values():
        statuses.setdefault(row["stripe_customer_id"], []).append(row["status"])
    for payload in emu.objects("subscriptions"):
        statuses.setdefault(str(payload["customer"]), []).append(str(payload["status"]))
    for user in users:
        derived = derive_user_status(statuses.get(user["stripe_customer_id"], []))
        if user["subscription_status"] != derived:
            problems.append(f"user {user['stripe_customer_id']}: "
                            f"{user['subscription_status']} != {derived}")
    return problems


def _owed(emu: StripeEmulator, invoice_id: str) -> bool:
    """Whether the invoice still deserves a payment-failed e-mail (its subscription lives)."""
    inv = emu.get(invoice_id)
    state = invoice_from_payload(inv, datetime.now(UTC))
    sub = emu.get(state.stripe_subscription_id) if state.stripe_subscription_id else None
    ended = sub is not None and sub["status"] in ENDED_SUBSCRIPTION_STATUSES
    kind = unpaid_kind(status=state.status, amount_remaining=state.amount_remaining,
                       attempt_count=state.attempt_count)
    return kind is not None and not ended


def _drain(engine: Engine, settings: Settings) -> None:
    """Drain as `reconcile notify` would once the payment-failed hold has passed."""
    notifier = Notifier.from_settings(settings)
    later = PAYMENT_FAILED_HOLD + timedelta(seconds=5)
    try:
        drain(engine, notifier.sender, notifier.policy, clock=lambda: utc_now() + later,
              alerts=notifier.alerts)
    finally:
        notifier.close()


def test_run_webhooks_and_emails_leave_database_equal_to_stripe(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run, then duplicated and reordered webhooks: DB equals Stripe, each failure mailed once."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    lookback_start = datetime.now(UTC) - timedelta(days=45) + timedelta(hours=1)
    engine = create_engine(db_url)
    with StripeEmulator(api_key=KEY) as emu, fake_sendgrid() as sendgrid:
        emu.seed(CUSTOMERS, rng_seed=11, mix=DEMO_MIX, freeze_gc=False)
        env = _settings(db_url, emu, sendgrid)
        settings = load_settings(env, env_file=None,
                                 require=("database", "stripe", "webhook", "email"))
        add_users(engine, emu)
        reconcile_once(settings, dry_run=False, force=True)
        planted = plant_drift(engine)
        revealed = failed_invoices_of(engine, planted["status"])

        run = CliRunner().invoke(main, ["run"], env=env, catch_exceptions=False)
        configure_logging(level="WARNING", fmt="json")  # CliRunner's stderr is gone now
        assert run.exit_code == 0, run.output
        assert "corrected" in run.output
        assert reconcile_once(settings, dry_run=True).changed_rows == 0

        with serving(app_from_settings(settings)) as base:
            emu.add_webhook_endpoint(base + WEBHOOK_PATH, secret=SECRET)
            registered = emu.now
            failing = _make_changes(emu, engine)
            for half in (1, 2):
                emu.advance(WINDOW / 2)
                delivered = emu.deliver_pending(duplicates=1, shuffle_seed=half)
                refused = [(r.event_type, r.status, r.error) for r in delivered if not r.ok]
                assert not refused
                assert any(r.duplicate for r in delivered)
        failed_in_window = {
            str(e["data"]["object"]["id"]) for e in emu.events("invoice.payment_failed")
            if e["created"] >= registered
        }
        _drain(engine, settings)

        problems = _mismatches(engine, emu, int(lookback_start.timestamp()), registered)
        assert not problems, "\n".join(problems[:40])
        emailed = Counter(r.body["custom_args"]["stripe_invoice_id"] for r in sendgrid.accepted)
        renewals = {i for i in failed_in_window
                    if invoice_subscription_id(emu.get(i)) in failing}
        # One failed renewal per failing subscription, not retried yet: all still owed.
        assert len(renewals) == len(failing) >= TRIALS - 1
        assert all(_owed(emu, i) for i in renewals)
        expected = renewals | {i for i in revealed if _owed(emu, i)}
        assert expected <= set(emailed), sorted(expected - set(emailed))
        assert all(n == 1 for n in emailed.values()), emailed.most_common(3)
        assert all(_owed(emu, i) for i in emailed)
    engine.dispose()


def test_demo_dir_follows_the_documented_precedence() -> None:
    """RECONCILE_DEMO_DIR wins, then an absolute XDG_DATA_HOME, then ~/.local/share."""
    assert demo_dir({DEMO_DIR_ENV: "/srv/d", "XDG_DATA_HOME": "/x"}) == Path("/srv/d")
    assert demo_dir({"XDG_DATA_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/stripe-reconcile/demo")
    assert demo_dir({"XDG_DATA_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.local/share/stripe-reconcile/demo")


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    """A non-empty directory without the demo's marker is refused and left untouched."""
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not made by `reconcile demo`"), demo_directory(
        DemoPaths(tmp_path)
    ):
        pass
    assert (tmp_path / "mail" / "precious.txt").read_text() == "keep me"


@pytest.fixture
def demo_home(tmp_path: Path) -> Iterator[Path]:
    """A demo directory PostgreSQL can use: as root it runs as `nobody`, who cannot enter
    pytest's 0700 temporary directories, so then it is a 0755 directory of its own."""
    if os.geteuid() != 0:
        yield tmp_path / "demo"
        return
    own = Path(tempfile.mkdtemp(prefix="reconcile-demo-test-", dir=default_runtime_parent()))
    own.chmod(0o755)
    try:
        yield own / "demo"
    finally:
        shutil.rmtree(own, ignore_errors=True)


def _demo(home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env: dict[str, Any] = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "STRIPE_"))},
        "PYTHONPATH": str(ROOT),
        DEMO_DIR_ENV: str(home),
        # Stray settings the demo must ignore (the .env in `cwd` has more of them).
        "STRIPE_API_KEY": "sk_live_strayvalue000000000000",
        "DATABASE_URL": "postgresql://stray@192.0.2.1:5432/nowhere",
        "EMAIL_BACKEND": "sendgrid",
    }
    return subprocess.run([sys.executable, "-m", "cli", "demo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_demo_runs_every_step_twice_in_one_directory(demo_home: Path, tmp_path: Path) -> None:
    """`reconcile demo` ignores stray settings, shows every step, and reruns on a clean database."""
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://dotenv@192.0.2.1/nowhere\n")
    first = _demo(demo_home, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _demo(demo_home, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for heading in (*STEPS, NEXT_HEADING):
        assert heading in first.stdout and heading in second.stdout
    assert "The database row changed" in first.stdout
    assert "PostgreSQL  initialised" in first.stdout
    assert "PostgreSQL  reused" in second.stdout
    drift = [line for line in first.stdout.splitlines() if "dry run #2" in line]
    assert drift and drift[0].split("(")[0] in second.stdout  # same drift: a clean database
    assert sorted(p.name for p in (demo_home / "mail").glob("*.eml"))


def test_demo_as_root_defaults_to_a_directory_postgres_can_enter(tmp_path: Path) -> None:
    """As root with a closed home, the default demo directory moves to /var/tmp."""
    from reconcile.demo_world import ROOT_FALLBACK

    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    chosen = demo_dir({"HOME": str(closed)})
    if os.geteuid() == 0:
        assert chosen == ROOT_FALLBACK
    else:
        assert chosen == closed / ".local" / "share" / "stripe-reconcile" / "demo"
