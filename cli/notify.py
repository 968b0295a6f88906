"""`reconcile notify` (drain the outbox once) and `reconcile worker` (keep draining)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict
from types import FrameType

import click

from cli.common import handle_errors, settings_for
from reconcile.database import ensure_migrated, make_engine
from reconcile.metrics import notify_counts, recording
from reconcile.notify import DrainResult, preview
from reconcile.notify_jobs import Notifier, utc_now


def _summary(result: DrainResult) -> str:
    line = (
        f"notifications: {result.sent} sent, {result.retrying} to retry, {result.failed} "
        f"failed, {result.canceled} canceled, {result.suppressed} suppressed"
    )
    return f"{line}\nstopped: {result.stopped}\n" if result.stopped else f"{line}\n"


@click.command("notify")
@click.option("--dry-run", is_flag=True, help="List what would be sent now; send nothing.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Most notifications to handle in this run.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Output format on stdout.",
)
@handle_errors
def notify_command(dry_run: bool, limit: int, fmt: str) -> None:
    """Send the queued failed-payment e-mails and alerts once (exit 1 if the backend refused)."""
    settings = settings_for("database", "email")
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        ensure_migrated(engine)
        if dry_run:
            due = preview(engine, clock=utc_now, limit=limit)
            if fmt == "json":
                click.echo(json.dumps([asdict(p) for p in due], indent=2))
            for p in due if fmt == "text" else ():
                click.echo(f"{p.notification_id}\t{p.kind}\t{p.stripe_invoice_id}\t"
                           f"{p.recipient or '-'}\t{p.subject or '-'}")
            return
        notifier = Notifier.from_settings(settings)
        try:
            with recording(settings, "notify") as batch:
                result = notifier.drain(engine, limit=limit)
                batch.report(notify_counts(result))
        finally:
            notifier.close()
    finally:
        engine.dispose()
    click.echo(json.dumps(asdict(result)) if fmt == "json" else _summary(result), nl=fmt == "json")
    if result.stopped:
        sys.exit(1)


@click.command("worker")
@click.option(
    "--poll-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
    help="Seconds to wait when nothing is due.",
)
@handle_errors
def worker_command(poll_interval: float) -> None:
    """Keep sending queued notifications until SIGTERM or Ctrl-C (run several if you like)."""
    settings = settings_for("database", "email")
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Finish the e-mail in flight and record it; unclaimed rows stay for the next worker.
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    notifier = Notifier.from_settings(settings)
    try:
        ensure_migrated(engine)
        result = notifier.run_worker(engine, stop, poll_interval_s=poll_interval)
    finally:
        notifier.close()
        engine.dispose()
    click.echo(_summary(result), nl=False)
