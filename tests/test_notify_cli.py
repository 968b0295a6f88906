"""`reconcile notify` end to end with the file backend (the local preview of the e-mail)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from cli import main
from tests.fake_sendgrid import fake_sendgrid
from tests.notify_support import SENDGRID_KEY, apply_invoice, failed_invoice, make_due, rows


@pytest.fixture
def env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for the file backend, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    return {
        "DATABASE_URL": db_url, "EMAIL_BACKEND": "file", "EMAIL_FROM": "billing@example.com",
        "EMAIL_FILE_DIR": str(tmp_path / "mail"), "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
    }


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_dry_run_lists_then_notify_writes_the_eml(
    engine: Engine, env: dict[str, str], tmp_path: Path
) -> None:
    """--dry-run lists the due e-mail and sends nothing; `notify` then writes one .eml."""
    apply_invoice(engine, failed_invoice("in_1"))
    make_due(engine)
    listed = invoke(["notify", "--dry-run"], env)
    assert listed.exit_code == 0, listed.output
    assert "in_1" in listed.output and "Your payment of $15.00 failed" in listed.output
    assert rows(engine)[0]["status"] == "pending"
    sent = invoke(["notify", "--format", "json"], env)
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["sent"] == 1
    [eml] = (tmp_path / "mail").glob("*.eml")
    assert "Subject: Your payment of $15.00 failed" in eml.read_text()
    assert rows(engine)[0]["status"] == "sent"


def test_refused_sendgrid_key_exits_one(engine: Engine, env: dict[str, str]) -> None:
    """When SendGrid refuses the key, `notify` says so and exits 1; the row stays pending."""
    apply_invoice(engine, failed_invoice("in_1"))
    make_due(engine)
    with fake_sendgrid() as fake:
        fake.answer(401)
        result = invoke(["notify"], {**env, "EMAIL_BACKEND": "sendgrid",
                                     "SENDGRID_API_KEY": SENDGRID_KEY,
                                     "SENDGRID_API_BASE": fake.url})
    assert result.exit_code == 1
    assert "stopped: SendGrid refused the API key" in result.output
    assert rows(engine)[0]["status"] == "pending"


def test_drain_after_run_sends_when_email_is_configured_and_skips_otherwise(
    engine: Engine, env: dict[str, str], db_url: str
) -> None:
    """The hook `reconcile run` calls drains with the configured backend, or does nothing."""
    from config import load_settings
    from reconcile.notify_jobs import drain_after_run

    apply_invoice(engine, failed_invoice("in_1"))
    make_due(engine)
    bare = load_settings({"DATABASE_URL": db_url}, env_file=None)
    assert drain_after_run(bare, engine) is None
    assert rows(engine)[0]["status"] == "pending"
    result = drain_after_run(load_settings(env, env_file=None), engine)
    assert result is not None and result.sent == 1
