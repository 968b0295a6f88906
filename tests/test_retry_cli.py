"""`reconcile retry-payments` end to end: settings, guard rails, reports, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from cli import main
from tests.test_retry_fake import KEY, Payments, seed, stripe_payments

__all__ = ["stripe_payments"]  # the fixture, imported for pytest


@pytest.fixture
def env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A custom retry policy against this test's database, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    return {
        "DATABASE_URL": db_url, "STRIPE_API_KEY": KEY, "RETRY_POLICY": "custom",
        "RETRY_SCHEDULE": "1d,3d", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
        "METRICS_TEXTFILE": str(tmp_path / "reconcile.prom"),
    }


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_live_key_without_retry_policy_is_refused(
    env: dict[str, str], stripe_payments: Payments
) -> None:
    """A live key with RETRY_POLICY unset exits 2 before any request to Stripe."""
    del env["RETRY_POLICY"], env["RETRY_SCHEDULE"]
    env["STRIPE_API_KEY"] = "sk_live_51RetryTestKey000000000000"
    result = invoke(["retry-payments"], env)
    assert result.exit_code == 2
    assert "refusing live-mode charges" in result.output
    assert "sk_live_51" not in result.output
    assert stripe_payments.fake.stats.requests == 0


def test_explicit_stripe_policy_is_refused(env: dict[str, str], stripe_payments: Payments) -> None:
    """RETRY_POLICY=stripe leaves retries to Stripe: the command charges nothing (exit 2)."""
    env["RETRY_POLICY"] = "stripe"
    del env["RETRY_SCHEDULE"]
    result = invoke(["retry-payments"], env)
    assert result.exit_code == 2 and "RETRY_POLICY=stripe" in result.output
    assert stripe_payments.keys == []


def test_dry_run_then_run_report_and_metrics(
    env: dict[str, str], engine: Engine, stripe_payments: Payments, tmp_path: Path
) -> None:
    """The dry run lists the charge; the run charges once; both publish their metrics."""
    inv = seed(engine, stripe_payments.fake, "sub_cli")
    stripe_payments.declines[inv] = [("card_declined", "do_not_honor")]
    dry = invoke(["retry-payments", "--dry-run"], env)
    assert dry.exit_code == 0, dry.output
    assert "would charge 1" in dry.output and "$15.00" in dry.output
    assert stripe_payments.keys == []
    result = invoke(["retry-payments", "--format", "json"], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["outcomes"] == {"declined": 1}
    assert report["attempts"][0]["decline_code"] == "do_not_honor"
    prom = (tmp_path / "reconcile.prom").read_text()
    assert 'reconcile_batch_charges{command="retry-payments",outcome="declined"} 1.0' in prom
    assert 'command="retry-payments-dry-run",outcome="would_charge"} 1.0' in prom


def test_max_charges_exits_five(
    env: dict[str, str], engine: Engine, stripe_payments: Payments
) -> None:
    """More due invoices than --max-charges: exit 5, nothing charged."""
    seed(engine, stripe_payments.fake, "sub_m1")
    seed(engine, stripe_payments.fake, "sub_m2")
    result = invoke(["retry-payments", "--max-charges", "1"], env)
    assert result.exit_code == 5 and "nothing was charged" in result.output
    assert stripe_payments.keys == []
