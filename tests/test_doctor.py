"""`reconcile doctor`: a healthy setup passes; each check fails on its own, with its hint."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import Engine, text

from cli import main
from reconcile.events import HANDLED_TYPES
from reconcile.migrate import downgrade
from reconcile.stripe_api import PINNED_API_VERSION
from tests.stripe_http import API

KEY = "sk_test_51DoctorTestKey00000000000"
HOOK_URL = "https://hooks.example.com/api/v1/stripe-webhooks"
SG_KEY = "SG." + "doctorkeyid0000000000a" + "." + "doctorsecret000000000000000000000000000"


@dataclass
class FakeStripe:
    """The account and webhook endpoints doctor reads; `skew` shifts Stripe's clock."""

    skew: timedelta = timedelta(0)
    account_status: int = 200
    endpoints: list[dict[str, Any]] = field(default_factory=lambda: [{
        "id": "we_1", "object": "webhook_endpoint", "url": HOOK_URL, "status": "enabled",
        "enabled_events": sorted(HANDLED_TYPES), "api_version": PINNED_API_VERSION,
        "livemode": False,
    }])

    def headers(self) -> dict[str, str]:
        return {"Date": format_datetime(datetime.now(UTC) + self.skew, usegmt=True)}


@dataclass
class Setup:
    """Everything one doctor run sees."""

    env: dict[str, str]
    stripe: FakeStripe
    engine: Engine
    db_url: str


@pytest.fixture
def setup(db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[Setup]:
    """A healthy deployment: migrated database, valid key, endpoint, SendGrid, metrics."""
    monkeypatch.chdir(tmp_path)
    env = {
        "DATABASE_URL": db_url, "STRIPE_API_KEY": KEY, "WEBHOOK_PUBLIC_URL": HOOK_URL,
        "EMAIL_FROM": "billing@example.com", "SENDGRID_API_KEY": SG_KEY,
        "METRICS_TEXTFILE": str(tmp_path / "reconcile.prom"), "LOG_LEVEL": "ERROR",
    }
    fake = FakeStripe()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        def account(request: Any) -> tuple[int, dict[str, str], str]:
            if fake.account_status != 200:
                body = {"error": {"type": "invalid_request_error", "message": "Invalid key"}}
                return fake.account_status, fake.headers(), json.dumps(body)
            return 200, fake.headers(), json.dumps({"id": "acct_test1", "object": "account"})

        def endpoints(request: Any) -> tuple[int, dict[str, str], str]:
            body = {"object": "list", "data": fake.endpoints, "has_more": False, "url": "/v1/x"}
            return 200, fake.headers(), json.dumps(body)

        rsps.add_callback(responses.GET, f"{API}/v1/account", callback=account)
        rsps.add_callback(responses.GET, f"{API}/v1/webhook_endpoints", callback=endpoints)
        yield Setup(env, fake, engine, db_url)


def doctor(setup: Setup) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run `reconcile doctor --format json`; (exit code, checks by name)."""
    result = CliRunner().invoke(main, ["doctor", "--format", "json"], env=setup.env,
                                catch_exceptions=False)
    report = json.loads(result.stdout)
    assert report["ok"] is (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in report["checks"]}


def test_healthy_setup_passes_every_check(setup: Setup) -> None:
    """Everything configured and reachable: every line ok, exit 0."""
    code, checks = doctor(setup)
    assert code == 0
    assert list(checks) == ["settings", "database", "stripe", "clock", "webhook", "email",
                            "retries", "metrics"]
    assert {c["status"] for c in checks.values()} == {"ok"}, checks


def _unset(name: str) -> Callable[[Setup], None]:
    return lambda s: s.env.__delitem__(name)


def _set(name: str, value: str) -> Callable[[Setup], None]:
    return lambda s: s.env.__setitem__(name, value)


def _endpoint(**changes: Any) -> Callable[[Setup], None]:
    return lambda s: s.stripe.endpoints[0].update(changes)


def _other_account(s: Setup) -> None:
    with s.engine.begin() as conn:
        conn.execute(text("INSERT INTO reconcile_account (stripe_account_id, livemode) "
                          "VALUES ('acct_other', false)"))


BREAKAGES: list[tuple[str, Callable[[Setup], None], str, str, set[str]]] = [
    # (id, break it, failing check, hint fragment, checks that may be skipped as a result)
    ("bad-setting", _set("DATABASE_URL", "mysql://x/y"), "settings", "config/example.env",
     {"database", "stripe", "clock", "webhook", "email", "retries", "metrics"}),
    ("bad-cron", _set("SCHEDULE_RECONCILE", "61 * * * *"), "settings", "five cron fields", set()),
    ("not-migrated", lambda s: downgrade(s.db_url, "0003"), "database", "reconcile db upgrade",
     set()),
    ("key-refused", lambda s: setattr(s.stripe, "account_status", 401), "stripe",
     "STRIPE_API_KEY", {"clock"}),
    ("other-account", _other_account, "stripe", "use that account's key", set()),
    ("clock-skew", lambda s: setattr(s.stripe, "skew", timedelta(minutes=5)), "clock", "NTP",
     set()),
    ("no-endpoint", _endpoint(url="https://elsewhere.example.com/hook"), "webhook",
     "register it", set()),
    ("event-missing", _endpoint(enabled_events=sorted(HANDLED_TYPES - {"invoice.paid"})),
     "webhook", "enable these event types", set()),
    ("endpoint-disabled", _endpoint(status="disabled"), "webhook", "enable it", set()),
    ("api-too-new", _endpoint(api_version="2099-01-01.future"), "webhook",
     f"api_version={PINNED_API_VERSION}", set()),
    ("api-too-old", _endpoint(api_version="2017-05-25"), "webhook", "api_version=", set()),
    ("no-sendgrid-key", _unset("SENDGRID_API_KEY"), "email", "Mail Send", set()),
    ("no-sender", _unset("EMAIL_FROM"), "email", "verified in SendGrid", set()),
    ("textfile-dir-missing", _set("METRICS_TEXTFILE", "/nonexistent/dir/reconcile.prom"),
     "metrics", "node_exporter", set()),
]


@pytest.mark.parametrize(
    ("breakage", "failing", "hint", "may_skip"), [b[1:] for b in BREAKAGES],
    ids=[b[0] for b in BREAKAGES],
)
def test_each_check_fails_alone_with_its_hint(
    setup: Setup, breakage: Callable[[Setup], None], failing: str, hint: str,
    may_skip: set[str],
) -> None:
    """One thing broken: exactly its line fails, with the hint that fixes it; exit 1."""
    breakage(setup)
    code, checks = doctor(setup)
    assert code == 1
    assert checks[failing]["status"] == "fail" and hint in checks[failing]["hint"]
    others = {name: c["status"] for name, c in checks.items() if name != failing}
    assert {n for n, s in others.items() if s != "ok"} <= may_skip, others
    assert all(others[n] == "skip" for n in may_skip if n in others)


def test_unverifiable_things_warn_without_failing(setup: Setup) -> None:
    """No WEBHOOK_PUBLIC_URL or an unpinned endpoint warn; the exit code stays 0."""
    setup.stripe.endpoints[0]["api_version"] = None
    code, checks = doctor(setup)
    assert code == 0 and checks["webhook"]["status"] == "warn"
    assert "pin it" in checks["webhook"]["hint"]
    del setup.env["WEBHOOK_PUBLIC_URL"]
    code, checks = doctor(setup)
    assert code == 0 and checks["webhook"]["status"] == "warn"


def test_retry_policy_line_reports_what_the_database_shows(setup: Setup) -> None:
    """Custom policy while Stripe still schedules retries is flagged from the mirrored data."""
    with setup.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, status, "
            "stripe_observed_at) VALUES ('sub_1', 'cus_1', 'past_due', now())"))
        conn.execute(text(
            "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, "
            "stripe_customer_id, status, amount_due, amount_remaining, currency, attempt_count,"
            " next_payment_attempt, stripe_observed_at) VALUES ('in_1', 'sub_1', 'cus_1', "
            "'open', 900, 900, 'usd', 1, now() + interval '1 day', now())"))
    setup.env.update(RETRY_POLICY="custom", RETRY_SCHEDULE="12h,1d,3d")
    code, checks = doctor(setup)
    assert code == 0 and checks["retries"]["status"] == "warn"
    assert "12h,1d,3d" in checks["retries"]["detail"]
    assert "Stripe also schedules retries for 1" in checks["retries"]["detail"]


def test_text_format_marks_and_hints(setup: Setup) -> None:
    """The text checklist has a mark per line and the hint under a failing line."""
    setup.stripe.skew = timedelta(minutes=-3)
    result = CliRunner().invoke(main, ["doctor"], env=setup.env, catch_exceptions=False)
    assert result.exit_code == 1
    assert "[ ok ] database" in result.stdout
    assert "[FAIL] clock" in result.stdout and "hint: synchronise it with NTP" in result.stdout
    assert "1 check(s) failed" in result.stdout
    assert KEY not in result.output and "doctorsecret" not in result.output
