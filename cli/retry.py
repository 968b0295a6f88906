"""`reconcile retry-payments`: charge due invoices under RETRY_POLICY=custom."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from cli.common import handle_errors, settings_for
from reconcile.metrics import recording, retry_counts
from reconcile.money import format_amount
from reconcile.retries import DEFAULT_MAX_CHARGES, RetryResult, retry_payments_once

JSON_SCHEMA_VERSION = 1
EXIT_CODES = """\b
Exit codes:
  0  done; card declines are outcomes, reported, not failures
  1  failed (e.g. Stripe unreachable); finished attempts stay recorded
  2  configuration error, or charging refused (live key without RETRY_POLICY=custom)
  4  another retry-payments run holds the lock
  5  more invoices due than --max-charges; nothing was charged"""


def as_json_document(result: RetryResult) -> dict[str, Any]:
    """The retry report as a stable JSON document (keys are a contract)."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "dry_run": result.dry_run,
        "candidates": result.candidates,
        "outcomes": result.outcomes,
        "attempts": [asdict(a) for a in result.attempts],
        "skipped": [asdict(s) for s in result.skipped],
        "stripe_requests": result.stripe_requests,
        "duration_s": result.duration_s,
    }


def render_text(result: RetryResult) -> str:
    """A summary line, one line per charge, then the skipped invoices and why."""
    verb = "would charge" if result.dry_run else "charged"
    lines = [
        f"Payment retries{' (dry run)' if result.dry_run else ''}: {result.candidates} "
        f"candidates, {verb} {len(result.attempts)}, skipped {len(result.skipped)} "
        f"({result.stripe_requests} Stripe requests, {result.duration_s:.1f}s)"
    ]
    for a in result.attempts:
        codes = "/".join(c for c in (a.code, a.decline_code) if c)
        replay = " (replayed)" if a.replayed else ""
        lines.append(
            f"  {a.invoice_id:<30} #{a.attempt:<3} {format_amount(a.amount, a.currency):>12}  "
            f"{a.outcome}{replay} {codes}".rstrip()
        )
    for s in result.skipped:
        lines.append(f"  {s.invoice_id:<30} skipped: {s.reason}"
                     + (f" ({s.detail})" if s.detail else ""))
    return "\n".join(lines) + "\n"


@click.command("retry-payments", epilog=EXIT_CODES)
@click.option("--dry-run", is_flag=True, help="Show what would be charged; charge nothing.")
@click.option(
    "--max-charges", type=click.IntRange(min=0), default=DEFAULT_MAX_CHARGES,
    show_default=True, help="Charge nothing when more invoices than this are due.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Report format on stdout.",
)
@handle_errors
def retry_command(dry_run: bool, max_charges: int, fmt: str) -> None:
    """Charge the stored card of each invoice due under RETRY_SCHEDULE (RETRY_POLICY=custom).

    Only invoices of active or past_due subscriptions, re-read from Stripe first. Each
    invoice and attempt has its own Idempotency-Key, so a rerun never charges twice. A card
    decline is reported and the run goes on (exit 0).
    """
    settings = settings_for("database", "stripe")
    command = "retry-payments-dry-run" if dry_run else "retry-payments"
    with recording(settings, command) as batch:
        result = retry_payments_once(settings, dry_run=dry_run, max_charges=max_charges)
        batch.report(retry_counts(result))
    click.echo(json.dumps(as_json_document(result)) if fmt == "json" else render_text(result),
               nl=fmt == "json")
