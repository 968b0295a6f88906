"""The `reconcile` CLI end to end: real StripeClient over `responses`, real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text

from cli import main
from reconcile.guards import LOCK_KEY
from tests import payloads as p
from tests.dbutil import add_user, dump, set_subscription, subscription_row
from tests.fakes import FakeStripe
from tests.stripe_http import serve

KEY = "sk_test_51CliTestKey000000000000"


@pytest.fixture
def stripe_fake() -> Iterator[tuple[FakeStripe, responses.RequestsMock]]:
    """A small Stripe account served over HTTP mocks (current and legacy shapes)."""
    fake = FakeStripe()
    fake.add_subscription(p.subscription("sub_a", "cus_a"))
    fake.add_subscription(p.subscription("sub_b", "cus_b", status="past_due", legacy=True))
    fake.add_invoice(p.invoice("in_b", "cus_b", "sub_b", status="open", amount_remaining=1500))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        serve(rsps, fake)
        yield fake, rsps


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a CLI run against this test's database, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    return {
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": KEY,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_dry_run_reports_drift_and_exit_code_three(
    cli_env: dict[str, str], engine: Engine, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """`reconcile --dry-run --exit-code` prints the drift table, writes nothing, exits 3."""
    add_user(engine, "cus_a")
    before = dump(engine)
    result = invoke(["--dry-run", "--exit-code"], cli_env)
    assert result.exit_code == 3, result.output
    assert "missing_local" in result.output and "sub_b" in result.output
    assert dump(engine) == before
    assert invoke(["--dry-run"], cli_env).exit_code == 0


def test_json_report_schema_then_run_then_clean(
    cli_env: dict[str, str], engine: Engine, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """The JSON report has the documented keys; `run` corrects; the next dry run is clean."""
    add_user(engine, "cus_a", status="canceled")
    add_user(engine, "cus_b")
    report = json.loads(invoke(["run", "--dry-run", "--format", "json"], cli_env).output)
    assert {"run_id", "dry_run", "summary", "drift"} <= report.keys()
    assert report["dry_run"] is True
    assert report["summary"]["missing_local"] == 2
    entry = report["drift"][0]
    assert set(entry) == {"kind", "object", "stripe_id", "field", "local", "stripe", "action"}
    assert invoke(["run"], cli_env).exit_code == 0
    assert subscription_row(engine, "sub_b")["status"] == "past_due"
    stripe_fake[0].tick()
    clean = json.loads(invoke(["--dry-run", "--format", "json", "--exit-code"], cli_env).output)
    assert clean["summary"] == {} and clean["outcome"] == "in_sync"


def test_rate_limited_listing_is_retried(
    cli_env: dict[str, str], engine: Engine, stripe_fake: tuple[FakeStripe, responses.RequestsMock]
) -> None:
    """A 429 on a listing page is backed off and retried; the run still completes."""
    fake, rsps = stripe_fake
    rsps.reset()
    serve(rsps, fake, rate_limit_first=1)
    result = invoke(["run", "--format", "json"], cli_env)
    assert result.exit_code == 0, result.output
    assert fake.stats.rate_limited == 1
    assert json.loads(result.output)["summary"]["missing_local"] == 2


def test_lock_held_exits_four(
    cli_env: dict[str, str], db_url: str, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """A run while another holds the lock exits 4 with a message on stderr."""
    holder_engine = create_engine(db_url)
    with holder_engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        result = invoke(["run"], cli_env)
    holder_engine.dispose()
    assert result.exit_code == 4
    assert "another reconciliation run holds the lock" in result.output


def test_safety_valve_exits_five_then_force(
    cli_env: dict[str, str], engine: Engine, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """More changes than --max-changes exit 5 and write nothing; --force applies."""
    before = dump(engine)
    result = invoke(["run", "--max-changes", "1"], cli_env)
    assert result.exit_code == 5 and "nothing was written" in result.output
    assert dump(engine) == before
    assert invoke(["run", "--max-changes", "1", "--force"], cli_env).exit_code == 0


def test_misconfiguration_lists_every_problem_and_exits_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad settings exit 2 before any work, naming each problem and never the secret."""
    monkeypatch.chdir(tmp_path)
    env = {"DATABASE_URL": "mysql://x/y", "STRIPE_API_KEY": "pk_test_secretvalue123"}
    result = invoke(["run"], env)
    assert result.exit_code == 2
    assert "DATABASE_URL" in result.output and "STRIPE_API_KEY" in result.output
    assert "secretvalue123" not in result.output


def test_unmigrated_database_exits_one_with_hint(
    cli_env: dict[str, str], db_url: str, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """A database behind the code is refused with a hint to run `reconcile db upgrade`."""
    assert "at revision 0001" in invoke(["db", "downgrade", "0001"], cli_env).output
    result = invoke(["run"], cli_env)
    assert result.exit_code == 1
    assert "reconcile db upgrade" in result.output
    assert invoke(["db", "upgrade"], cli_env).exit_code == 0
    current = invoke(["db", "current"], cli_env).output
    assert current.splitlines()[0].split()[-1] == current.splitlines()[1].split()[-1]


def test_account_mismatch_exits_two(
    cli_env: dict[str, str], engine: Engine, stripe_fake: tuple[FakeStripe, object]
) -> None:
    """A key of another account than the database remembers is refused with exit 2."""
    assert invoke(["run"], cli_env).exit_code == 0
    stripe_fake[0].account_id = "acct_other"
    set_subscription(engine, "sub_a", status="unpaid")
    result = invoke(["run"], cli_env)
    assert result.exit_code == 2 and "acct_other" in result.output
    assert subscription_row(engine, "sub_a")["status"] == "unpaid"
