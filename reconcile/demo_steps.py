"""The walkthrough's steps: dry run, run, outbox, clean dry run, a failed renewal by webhook.

Each step drives the product through its public entry points (`jobs.reconcile_once`, the
notifier's drain, the receiver app over HTTP) and prints what happened for a person to read.
"""

from __future__ import annotations

import dataclasses
import textwrap
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from sqlalchemy import text

from config import Settings
from reconcile.demo_server import serving
from reconcile.demo_world import DemoContext, DemoError
from reconcile.emulator import DeliveryResult
from reconcile.engine import RunResult
from reconcile.jobs import reconcile_once
from reconcile.notify import DrainResult, drain
from reconcile.notify_jobs import Notifier, utc_now
from reconcile.notify_policy import PAYMENT_FAILED_HOLD
from reconcile.report import WIDTH, render_text
from reconcile.snapshot import subscription_from_payload
from reconcile.webhook import WEBHOOK_PATH, app_from_settings

DECLINING_CARD = "pm_card_chargeDeclined"
REPORT_ROWS = 30
LISTED_EMAILS = 12
ROW_TIMEOUT_S = 5.0
# One example of each of these in step 2: between them they use every kind of action.
EXAMPLE_KINDS = (
    "status", "user_status", "missing_local", "invoice_attempts", "missing_in_stripe",
    "unknown_customer",
)
_ROW = """
    SELECT s.status, s.current_period_end, u.email, u.subscription_status
      FROM subscriptions s LEFT JOIN users u ON u.id = s.user_id
     WHERE s.stripe_subscription_id = :id
"""


def indented(block: str, by: str = "  ") -> str:
    """Every line of `block` indented (the report keeps its own layout)."""
    return "\n".join(by + line if line else line for line in block.rstrip("\n").splitlines())


def say(ctx: DemoContext, prose: str) -> None:
    """A paragraph, indented and wrapped to the report's width."""
    ctx.out(wrap(prose, "  ", "  "))


def wrap(prose: str, first: str, rest: str) -> str:
    """`prose` wrapped to the report's width; paths and ids are never split."""
    return textwrap.fill(prose, width=WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def plural(count: int, noun: str) -> str:
    """The count with its noun: 1 e-mail, 2 e-mails, no e-mails."""
    if count == 0:
        return f"no {noun}s"
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run_settings(settings: Settings) -> Settings:
    """The settings for runs: without EMAIL_FROM, so a run leaves the outbox to step 3."""
    return dataclasses.replace(settings, email_from=None)


def previous_sync(ctx: DemoContext) -> RunResult:
    """The sync that happened before the demo's story begins (a first sync needs --force)."""
    return reconcile_once(run_settings(ctx.settings), dry_run=False, force=True)


def dry_run(ctx: DemoContext, *, rows: int = REPORT_ROWS) -> RunResult:
    """Step 1 and 4: `reconcile --dry-run`, its text report (at most `rows` entries) printed."""
    result = reconcile_once(run_settings(ctx.settings), dry_run=True)
    ctx.out(indented(render_text(result, max_rows=rows)))
    return result


def correct(ctx: DemoContext) -> RunResult:
    """Step 2: `reconcile run`, what it wrote, with a few of the changes spelled out."""
    result = reconcile_once(run_settings(ctx.settings), dry_run=False)
    a = result.applied
    ctx.out(f"  Run #{result.run_id}: {result.outcome}, {a.total} rows written in one "
            f"transaction ({result.duration_s:.1f} s, {result.stripe_requests} Stripe requests)")
    for label, count in (
        ("subscriptions inserted", a.subscriptions_inserted),
        ("subscriptions updated", a.subscriptions_updated),
        ("subscriptions canceled or invoices marked deleted: gone from Stripe", a.marked_gone),
        ("invoices inserted", a.invoices_inserted),
        ("invoices updated", a.invoices_updated),
        ("users linked to their subscriptions", a.users_linked),
        ("users.subscription_status updated", a.users_updated),
        ("notifications queued in the outbox", a.notifications_queued),
    ):
        ctx.out(f"    {count:>5}  {label}")
    ctx.out("  For example:")
    for kind in EXAMPLE_KINDS:
        d = next((d for d in result.drift if d.kind == kind and d.action != "report"), None)
        if d is not None:
            change = f"{d.field} {d.local} -> {d.stripe}" if d.action == "update" else d.kind
            ctx.out(f"    {d.action:<13} {d.object:<12} {d.stripe_id:<22} {change}")
    return result


def _notification_id(path: Path) -> int:
    """Files are named <notification id>-<kind>-<invoice>.eml; order them by that id."""
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def drain_outbox(ctx: DemoContext) -> tuple[DrainResult, list[Path]]:
    """Drain as `reconcile notify` would once payment-failed e-mails are due; new .eml files."""
    before = set(ctx.paths.mail.glob("*.eml"))
    notifier = Notifier.from_settings(ctx.settings)
    # Payment-failed e-mails wait PAYMENT_FAILED_HOLD (Stripe may ask the customer to
    # authenticate instead); the demo does not wait, it drains as of that much later.
    due_at = PAYMENT_FAILED_HOLD + timedelta(seconds=5)
    try:
        result = drain(
            ctx.engine, notifier.sender, notifier.policy, clock=lambda: utc_now() + due_at,
            renderer=notifier.renderer, alerts=notifier.alerts,
            product_names=notifier.product_names,
        )
    finally:
        notifier.close()
    return result, sorted(set(ctx.paths.mail.glob("*.eml")) - before, key=_notification_id)


def describe_emails(ctx: DemoContext, files: Sequence[Path], *, limit: int) -> None:
    """The path, recipient and subject of each of the first `limit` files."""
    for path in files[:limit]:
        with path.open("rb") as f:
            headers = BytesHeaderParser().parse(f)
        ctx.out(f"    {path}")
        ctx.out(f"        to {headers['To']}: {headers['Subject']}")
    if len(files) > limit:
        ctx.out(f"    … and {len(files) - limit} more in {ctx.paths.mail}")


def outbox(ctx: DemoContext, revealed: Collection[str]) -> list[Path]:
    """Step 3: drain the outbox to the file backend; `revealed` are the planted failures."""
    result, files = drain_outbox(ctx)
    new = [f for f in files if any(f.name.endswith(f"-{i}.eml") for i in revealed)]
    earlier = [f for f in files if f not in new]
    say(ctx, f"Payment-failed e-mails wait {PAYMENT_FAILED_HOLD.seconds // 60} minutes in the "
             "outbox (in case Stripe asks the customer to authenticate instead); the demo "
             "drains it as `reconcile notify` would then.")
    say(ctx, f"{plural(len(new), 'e-mail')} for the failed payments this run revealed, and "
             f"{len(earlier)} for failures the first sync had queued, written to "
             f"{ctx.paths.mail}; {plural(result.sent - len(files), 'operator alert')} logged "
             f"to {ctx.paths.log}:")
    describe_emails(ctx, new, limit=LISTED_EMAILS)
    describe_emails(ctx, earlier, limit=max(2, LISTED_EMAILS - len(new)))
    if len(new) != len(revealed):
        raise DemoError(f"{len(revealed)} failed payments were revealed but {len(new)} "
                        "e-mails written about them")
    return files


@dataclasses.dataclass(frozen=True)
class _Target:
    subscription: str
    customer: str
    renews_at: int


def _pick_target(ctx: DemoContext) -> _Target:
    """The active subscription of a local user that renews first, and will keep renewing."""
    with ctx.engine.connect() as conn:
        users = set(conn.execute(text(
            "SELECT stripe_customer_id FROM users WHERE email IS NOT NULL")).scalars())
    now = datetime.now(UTC)
    best: _Target | None = None
    for sub in ctx.emulator.objects("subscriptions"):
        state = subscription_from_payload(sub, now)
        if (state.status != "active" or state.cancel_at_period_end or sub.get("cancel_at")
                or state.stripe_customer_id not in users or state.current_period_end is None):
            continue
        renews = int(state.current_period_end.timestamp())
        if best is None or renews < best.renews_at:
            best = _Target(state.stripe_subscription_id, state.stripe_customer_id, renews)
    if best is None:
        raise DemoError("no active subscription of a local user to renew")
    return best


def _row(ctx: DemoContext, subscription: str) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        found = conn.execute(text(_ROW), {"id": subscription}).mappings().one()
    return dict(found)


def _check_delivered(results: Sequence[DeliveryResult]) -> None:
    refused = [r for r in results if not r.ok]
    if refused:
        first = refused[0]
        raise DemoError(
            f"the receiver refused {len(refused)} of {len(results)} events, e.g. "
            f"{first.event_type} {first.event_id}: {first.status or first.error}"
        )


def _deliver_and_watch(
    ctx: DemoContext, subscription: str, before: str
) -> tuple[list[DeliveryResult], float, dict[str, Any]]:
    """Deliver in the background; poll the row until its status moves. (results, s, row)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        delivering = pool.submit(ctx.emulator.deliver_pending)
        while True:
            row = _row(ctx, subscription)
            if row["status"] != before:
                latency = time.perf_counter() - started
                break
            if time.perf_counter() - started > ROW_TIMEOUT_S:
                raise DemoError(
                    f"{subscription} still says {before} {ROW_TIMEOUT_S:.0f} s after its "
                    "webhooks were sent", hint=f"the receiver's log is in {ctx.paths.log}")
            time.sleep(0.002)
        results = delivering.result()
    _check_delivered(results)
    return results, latency, row


def _when(value: datetime | None) -> str:
    return "∅" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M}Z"


def webhook(ctx: DemoContext, webhook_secret: str) -> float:
    """Step 5: a renewal fails at Stripe; its signed webhooks reach the receiver over HTTP.

    Returns the seconds from the first POST to the row showing the new status.
    """
    emu = ctx.emulator
    with serving(app_from_settings(ctx.settings)) as base:
        url = base + WEBHOOK_PATH
        emu.add_webhook_endpoint(url, secret=webhook_secret)
        say(ctx, f"The receiver (what `reconcile serve` runs) listens at {url}; the emulator "
                 "sends it every event, signed with the endpoint's secret as Stripe does.")
        target = _pick_target(ctx)
        if target.renews_at - 1 > emu.now:
            hours = (target.renews_at - 1 - emu.now) / 3600
            emu.advance_to(target.renews_at - 1)
            background = emu.deliver_pending()
            _check_delivered(background)
            on_the_way = (f"{plural(len(background), 'event')} on the way, each delivered "
                          "and acknowledged" if background else "nothing else happened")
            say(ctx, f"Stripe's clock moved {hours:.1f} h, to a second before "
                     f"{target.subscription} renews; {on_the_way}.")
        emu.set_default_payment_method(target.customer, DECLINING_CARD)
        before = _row(ctx, target.subscription)
        emu.advance(timedelta(seconds=1))
        results, latency, after = _deliver_and_watch(ctx, target.subscription, before["status"])
    invoice = str(emu.get(target.subscription)["latest_invoice"])
    kinds = ", ".join(sorted({r.event_type for r in results}))
    say(ctx, f"Its customer's card now declines ({DECLINING_CARD}) and the renewal fails: "
             f"{len(results)} events ({kinds}). The database row changed "
             f"{latency * 1000:.0f} ms after the emulator began sending them:")
    ctx.out(f"    subscriptions  {target.subscription}  status {before['status']} -> "
            f"{after['status']}")
    ctx.out(f"                   current_period_end {_when(before['current_period_end'])} -> "
            f"{_when(after['current_period_end'])}")
    ctx.out(f"    users          {after['email']}  subscription_status "
            f"{before['subscription_status']} -> {after['subscription_status']}")
    if latency > 1.0:  # a busy machine, not a failure
        say(ctx, "(Slower than the usual few hundred milliseconds: is this machine busy?)")
    _, files = drain_outbox(ctx)
    mine = [f for f in files if f.name.endswith(f"-{invoice}.eml")]
    if not mine:
        raise DemoError(f"no payment-failed e-mail was written for {invoice}")
    say(ctx, f"And the e-mail about the failed invoice {invoice}:")
    describe_emails(ctx, mine, limit=1)
    return latency
