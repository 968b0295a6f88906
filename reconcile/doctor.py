"""`reconcile doctor`: a pre-deploy checklist, one line (mark, detail, hint) per check.

Each check takes its dependencies as arguments and never raises: a failing dependency is a
failed line, and the lines after it still run where they can. `warn` lines are things this
tool cannot verify or that are legitimate but worth knowing; only `fail` fails the exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol

from sqlalchemy import Connection, Engine, text

from config import Settings
from reconcile.database import ensure_migrated
from reconcile.errors import AccountMismatchError, ReconcileError
from reconcile.guards import check_account
from reconcile.migrate import head
from reconcile.scheduler import crontab_trigger
from reconcile.stripe_wire import AccountProbe, WebhookEndpoint

Status = Literal["ok", "warn", "fail", "skip"]
MAX_CLOCK_SKEW_S = 60.0  # well inside Stripe's 300 s webhook signature tolerance
# Oldest API version whose payloads our readers (snapshot.py) understand; the newest is the
# SDK's pinned version. Both shapes between them (pre- and post-2025 "basil") are read.
OLDEST_API_VERSION = "2020-08-27"
_RETRIES_DASHBOARD = "Dashboard > Billing > Revenue recovery > Retries"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist."""

    name: str
    status: Status
    detail: str
    hint: str | None = None


class DoctorGateway(Protocol):
    """The Stripe reads the doctor makes."""

    def probe_account(self) -> AccountProbe: ...
    def list_webhook_endpoints(self) -> tuple[WebhookEndpoint, ...]: ...


def _failed(name: str, exc: Exception) -> Check:
    if isinstance(exc, ReconcileError):
        return Check(name, "fail", exc.message, exc.hint)
    return Check(name, "fail", f"{type(exc).__name__}: {exc}", "this is a bug; please report it")


def check_settings(settings: Settings) -> Check:
    """Settings parsed (the caller loaded them); cron expressions must also be usable."""
    try:
        crontab_trigger(settings.schedule_reconcile)
    except ValueError as exc:
        return Check("settings", "fail", f"SCHEDULE_RECONCILE cannot be scheduled: {exc}",
                     "write five cron fields within range, e.g. '0 * * * *'")
    return Check("settings", "ok", "valid")


def check_database(engine: Engine) -> Check:
    """Reachable and migrated to this release's head."""
    try:
        ensure_migrated(engine)
    except ReconcileError as exc:
        return _failed("database", exc)
    return Check("database", "ok", f"reachable, schema at {head()}")


def check_stripe_key(probe: AccountProbe, conn: Connection | None) -> Check:
    """The key's account and mode, against the account the database remembers."""
    mode = "live" if probe.account.livemode else "test"
    detail = f"{probe.account.id} ({mode} mode)"
    if conn is None:
        return Check("stripe", "ok", f"{detail}; not compared (database unavailable)")
    try:
        with conn.begin():
            check_account(conn, probe.account.id, probe.account.livemode, remember=False)
            known = conn.execute(text("SELECT count(*) FROM reconcile_account")).scalar_one()
    except AccountMismatchError as exc:
        return _failed("stripe", exc)
    if not known:
        return Check("stripe", "ok", f"{detail}; the first run will remember it")
    return Check("stripe", "ok", f"{detail}, matches the database")


def check_clock(probe: AccountProbe) -> Check:
    """Our clock against Stripe's Date header, taken at the middle of the request."""
    if probe.stripe_date is None:
        return Check("clock", "warn", "Stripe's response had no usable Date header",
                     "check for a proxy rewriting headers between this host and Stripe")
    midpoint = probe.sent_at + (probe.received_at - probe.sent_at) / 2
    # Date has whole seconds (truncated): Stripe's true time is up to 1 s later.
    skew = (probe.stripe_date - midpoint).total_seconds() + 0.5
    if abs(skew) >= MAX_CLOCK_SKEW_S:
        return Check(
            "clock", "fail", f"this host's clock is {-skew:+.0f} s off Stripe's",
            "synchronise it with NTP (chrony or systemd-timesyncd): webhook signatures are "
            "checked against it and stale timestamps are refused",
        )
    return Check("clock", "ok", f"within {abs(skew):.0f} s of Stripe's")


def _version_problem(version: str | None, pinned: str) -> tuple[Status, str, str] | None:
    if version is None:
        return ("warn", "renders events in the account's default API version (not readable "
                "through the API)", f"pin it: recreate the endpoint with api_version={pinned}")
    if not OLDEST_API_VERSION <= version[:10] <= pinned[:10]:
        return ("fail", f"API version {version} is outside what this release reads "
                f"({OLDEST_API_VERSION} to {pinned})",
                f"recreate the endpoint with api_version={pinned}")
    return None


def check_webhook(
    url: str | None, endpoints: Iterable[WebhookEndpoint], handled: frozenset[str], pinned: str
) -> Check:
    """An enabled endpoint for WEBHOOK_PUBLIC_URL with every handled event and a readable
    API version."""
    if url is None:
        return Check("webhook", "warn", "WEBHOOK_PUBLIC_URL is not set; not checked",
                     "set it to the receiver's public URL if you run `reconcile serve`")
    mine = [e for e in endpoints if e.url.rstrip("/") == url.rstrip("/")]
    if not mine:
        return Check("webhook", "fail", f"no endpoint in Stripe for {url}",
                     "register it (Dashboard > Developers > Webhooks) with the events listed "
                     "in the README")
    best = next((e for e in mine if e.status == "enabled"), mine[0])
    if best.status != "enabled":
        return Check("webhook", "fail", f"endpoint {best.id} is {best.status}",
                     "enable it in Dashboard > Developers > Webhooks")
    missing = sorted(handled - set(best.enabled_events)) if "*" not in best.enabled_events else []
    if missing:
        return Check("webhook", "fail", f"endpoint {best.id} does not send {', '.join(missing)}",
                     "enable these event types on the endpoint")
    problem = _version_problem(best.api_version, pinned)
    if problem is not None:
        return Check("webhook", problem[0], f"endpoint {best.id} {problem[1]}", problem[2])
    extra = f" ({len(mine)} endpoints share this URL)" if len(mine) > 1 else ""
    return Check("webhook", "ok", f"endpoint {best.id}, every handled event, API "
                 f"{best.api_version}{extra}")


def check_email(settings: Settings) -> Check:
    """The configured backend has what it needs to send (the key itself is not tried)."""
    if settings.email_from is None:
        return Check("email", "fail", "EMAIL_FROM is not set: notifications are never sent",
                     "set EMAIL_FROM to a sender verified in SendGrid")
    if settings.email_backend != "sendgrid":
        return Check("email", "warn", f"EMAIL_BACKEND={settings.email_backend}: notifications "
                     "are not e-mailed to customers", "use EMAIL_BACKEND=sendgrid in production")
    if settings.sendgrid_api_key is None:
        return Check("email", "fail", "SENDGRID_API_KEY is not set",
                     "create a SendGrid API key with Mail Send permission")
    return Check("email", "ok", f"SendGrid key present, sender {settings.email_from}")


def _durations(delays: Sequence[timedelta]) -> str:
    """1d,3d,12h,30m: the way RETRY_SCHEDULE is written."""
    shown = []
    for delay in delays:
        seconds = int(delay.total_seconds())
        unit, size = next((u, n) for u, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
                          if seconds % n == 0)
        shown.append(f"{seconds // size}{unit}")
    return ",".join(shown)


_OPEN_FAILED = """
SELECT count(*) FILTER (WHERE i.next_payment_attempt IS NULL),
       count(*) FILTER (WHERE i.next_payment_attempt IS NOT NULL)
  FROM invoices i JOIN subscriptions s ON s.stripe_subscription_id = i.stripe_subscription_id
 WHERE i.status = 'open' AND i.amount_remaining > 0 AND i.attempt_count >= 1
   AND s.status IN ('active', 'past_due')
"""


def check_retries(settings: Settings, conn: Connection | None) -> Check:
    """What can be verified about who retries failed payments (Stripe's settings cannot)."""
    unscheduled = scheduled = 0
    if conn is not None:
        with conn.begin():
            unscheduled, scheduled = conn.execute(text(_OPEN_FAILED)).one()
    if settings.retry_policy == "custom":
        plan = _durations(settings.retry_schedule)
        if scheduled:
            return Check("retries", "warn", f"custom schedule {plan}, but Stripe also schedules "
                         f"retries for {scheduled} open invoice(s); they are skipped until it "
                         "stops", f"turn Stripe's retries off ({_RETRIES_DASHBOARD})")
        return Check("retries", "ok", f"custom schedule {plan}; Stripe's own retry settings "
                     "are not readable through the API")
    default = "" if settings.retry_policy_explicit else " (the default)"
    detail = (f"RETRY_POLICY=stripe{default}: Smart Retries or the account's schedule retry; "
              "those settings are not readable through the API")
    if unscheduled:
        return Check("retries", "warn", f"{detail}; {unscheduled} failed open invoice(s) "
                     "have no retry scheduled by Stripe",
                     f"check that retries are on ({_RETRIES_DASHBOARD}) or use RETRY_POLICY=custom")
    return Check("retries", "ok", detail)


def check_metrics(settings: Settings, writable: Callable[[str], bool]) -> Check:
    """Where run metrics go; a textfile's directory must be writable."""
    path, url = settings.metrics_textfile, settings.prometheus_pushgateway_url
    if path is None and url is None:
        return Check("metrics", "warn", "no PROMETHEUS_PUSHGATEWAY_URL or METRICS_TEXTFILE: "
                     "runs report no metrics", "set one, and the alerts in the README")
    if path is not None and not writable(str(path.parent)):
        return Check("metrics", "fail", f"cannot write to {path.parent}",
                     "create the directory node_exporter reads and make it writable")
    where = [w for w in (str(path) if path else None, "Pushgateway" if url else None) if w]
    return Check("metrics", "ok", " and ".join(where) + (" (not contacted)" if url else ""))


def overall_ok(checks: Iterable[Check]) -> bool:
    """Exit 0 only when nothing failed."""
    return all(c.status != "fail" for c in checks)


def skipped(names: Iterable[str], reason: str) -> list[Check]:
    """Lines for checks that could not run."""
    return [Check(name, "skip", reason) for name in names]


def _guarded(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    try:
        return check()
    except Exception as exc:  # one broken dependency must not hide the other lines
        return [_failed(name, exc)]


def run_checks(
    settings: Settings, *, engine: Engine, gateway: DoctorGateway, handled: frozenset[str],
    pinned: str, writable: Callable[[str], bool],
) -> list[Check]:
    """Every check after loading the settings, in order, each isolated from the others."""
    checks = [check_settings(settings), check_database(engine)]
    with ExitStack() as stack:
        conn = stack.enter_context(engine.connect()) if checks[-1].status == "ok" else None

        def stripe() -> list[Check]:
            probe = gateway.probe_account()
            return [check_stripe_key(probe, conn), check_clock(probe)]

        def webhook() -> list[Check]:
            url = settings.webhook_public_url
            endpoints = gateway.list_webhook_endpoints() if url else ()
            return [check_webhook(url, endpoints, handled, pinned)]

        stripe_lines = _guarded("stripe", stripe)
        checks += stripe_lines
        if len(stripe_lines) == 1:
            checks += skipped(["clock"], "Stripe could not be reached")
        checks += _guarded("webhook", webhook)
        checks.append(check_email(settings))
        checks += _guarded("retries", lambda: [check_retries(settings, conn)])
    checks.append(check_metrics(settings, writable))
    return checks
