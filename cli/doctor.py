"""`reconcile doctor`: what is misconfigured, before a deploy finds out."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from config import Settings, load_settings
from reconcile.database import make_engine
from reconcile.doctor import Check, overall_ok, run_checks, skipped
from reconcile.errors import ConfigError
from reconcile.events import HANDLED_TYPES
from reconcile.logging import configure_logging
from reconcile.stripe_api import PINNED_API_VERSION, StripeGateway, make_client

CHECKS_AFTER_SETTINGS = (
    "database", "stripe", "clock", "webhook", "email", "retries", "metrics",
)
_MARKS = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]", "skip": "[skip]"}
_INDENT = " " * 20


def _gateway(settings: Settings) -> StripeGateway:
    # A doctor answers in seconds: one retry, short backoff, unlike a run's patient policy.
    assert settings.stripe_api_key is not None
    client = make_client(settings.stripe_api_key.reveal(), settings.stripe_api_base, 0)
    return StripeGateway(client, api_key_livemode=settings.stripe_livemode, max_attempts=2,
                         backoff_cap=1.0)


def diagnose(env_file: Path | None = Path(".env")) -> list[Check]:
    """Load the settings and run every check that they allow."""
    try:
        settings = load_settings(env_file=env_file, require=("database", "stripe"))
    except ConfigError as exc:
        return [Check("settings", "fail", "\n".join(exc.problems),
                      "fix the variables above (config/example.env documents each)"),
                *skipped(CHECKS_AFTER_SETTINGS, "settings are invalid")]
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        return run_checks(
            settings, engine=engine, gateway=_gateway(settings), handled=HANDLED_TYPES,
            pinned=PINNED_API_VERSION, writable=lambda d: os.access(d, os.W_OK | os.X_OK),
        )
    finally:
        engine.dispose()


def render_text(checks: list[Check]) -> str:
    """One line per check with its mark, continuation lines and the hint indented."""
    lines = []
    for check in checks:
        first, *rest = check.detail.split("\n")
        lines.append(f"{_MARKS[check.status]} {check.name:<12} {first}")
        lines.extend(f"{_INDENT}{line}" for line in rest)
        if check.hint and check.status != "ok":
            lines.append(f"{_INDENT}hint: {check.hint}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines) + "\n"


@click.command("doctor")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Checklist format on stdout.",
)
def doctor_command(fmt: str) -> None:
    """Check settings, database, Stripe key, clock, webhook endpoint, e-mail, retries, metrics.

    Exit 0 only when no check failed (warnings are things to know, not failures).
    """
    checks = diagnose()
    if fmt == "json":
        click.echo(json.dumps({"ok": overall_ok(checks), "checks": [asdict(c) for c in checks]}))
    else:
        click.echo(render_text(checks), nl=False)
    sys.exit(0 if overall_ok(checks) else 1)
