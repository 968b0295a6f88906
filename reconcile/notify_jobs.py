"""Settings -> the notifier's collaborators, and the drain as a whole job.

Like reconcile.jobs, this is where settings become clients; notify.py below it takes
everything as arguments.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from reconcile.alerts import Alerts, AlertWebhook
from reconcile.errors import ConfigError, ReconcileError
from reconcile.mail.local_senders import ConsoleSender, FileSender
from reconcile.mail.message import Sender
from reconcile.mail.render import Renderer
from reconcile.mail.sendgrid_sender import SendGridConfig, SendGridSender
from reconcile.notify import DrainResult, NotifyPolicy, ProductNames, drain, run_worker
from reconcile.notify_policy import ACTION_REQUIRED, PAYMENT_FAILED

log = structlog.get_logger("reconcile.notify")


def utc_now() -> datetime:
    """The real clock (tests pass their own)."""
    return datetime.now(UTC)


def build_sender(settings: Settings) -> Sender:
    """The EMAIL_BACKEND the settings name; EMAIL_FROM must be set."""
    if settings.email_from is None:
        raise ConfigError(["EMAIL_FROM: is required to send notification e-mails but not set"])
    if settings.email_backend == "console":
        return ConsoleSender(settings.email_from, settings.email_reply_to)
    if settings.email_backend == "file":
        return FileSender(settings.email_file_dir, settings.email_from, settings.email_reply_to)
    if settings.sendgrid_api_key is None:
        raise ConfigError(["SENDGRID_API_KEY: is required when EMAIL_BACKEND=sendgrid"])
    templates = (
        (PAYMENT_FAILED, settings.sendgrid_template_id_payment_failed),
        (ACTION_REQUIRED, settings.sendgrid_template_id_action_required),
    )
    return SendGridSender(
        SendGridConfig(
            api_key=settings.sendgrid_api_key,
            sender=settings.email_from,
            reply_to=settings.email_reply_to,
            api_base=settings.sendgrid_api_base,
            template_ids=tuple((kind, tid) for kind, tid in templates if tid),
            sandbox=settings.sendgrid_sandbox,
        )
    )


def build_policy(settings: Settings) -> NotifyPolicy:
    """NOTIFY_MAX_ATTEMPTS and NOTIFY_MAX_AGE_HOURS as a policy."""
    return NotifyPolicy(
        max_attempts=settings.notify_max_attempts,
        max_age=timedelta(hours=settings.notify_max_age_hours),
    )


def build_alerts(settings: Settings) -> Alerts:
    """Log alerts, and post them to ALERT_WEBHOOK_URL when set."""
    url = settings.alert_webhook_url
    return Alerts(AlertWebhook(url) if url is not None else None)


def stripe_product_names(settings: Settings) -> ProductNames | None:
    """Product id -> name from Stripe (cached), when a Stripe key is configured.

    Webhook payloads name products only by id; a lookup that fails just leaves the e-mail
    saying "your subscription".
    """
    if settings.stripe_api_key is None:
        return None
    from reconcile.jobs import make_gateway  # only needed when Stripe is configured

    gateway = make_gateway(settings)
    cache: dict[str, str | None] = {}
    lock = threading.Lock()

    def lookup(product_id: str) -> str | None:
        with lock:
            if product_id in cache:
                return cache[product_id]
        try:
            # The gateway refuses (ValueError) an id that is not a plain path segment.
            found = gateway.retrieve(f"/v1/products/{product_id}")
        except (ReconcileError, ValueError) as exc:
            log.warning("notify.product_lookup_failed", product_id=product_id, error=str(exc))
            return None
        name = found.object.get("name") if found is not None else None
        result = name if isinstance(name, str) and name else None
        with lock:
            cache[product_id] = result
        return result

    return lookup


@dataclass(frozen=True)
class Notifier:
    """Everything a drain needs, built once from settings."""

    sender: Sender
    policy: NotifyPolicy
    alerts: Alerts
    product_names: ProductNames | None = None
    renderer: Renderer = field(default_factory=Renderer)

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        """Sender, policy, alerts and product lookup for these settings."""
        return cls(
            sender=build_sender(settings), policy=build_policy(settings),
            alerts=build_alerts(settings), product_names=stripe_product_names(settings),
        )

    def drain(self, engine: Engine, *, limit: int = 1000) -> DrainResult:
        """Drain the outbox once with the real clock."""
        return drain(
            engine, self.sender, self.policy, clock=utc_now, limit=limit,
            renderer=self.renderer, alerts=self.alerts, product_names=self.product_names,
        )

    def run_worker(self, engine: Engine, stop: threading.Event, *,
                   poll_interval_s: float = 5.0) -> DrainResult:
        """Drain until `stop` is set."""
        return run_worker(
            engine, self.sender, self.policy, clock=utc_now, stop=stop,
            poll_interval_s=poll_interval_s, renderer=self.renderer, alerts=self.alerts,
            product_names=self.product_names,
        )

    def close(self) -> None:
        """Flush queued alert posts."""
        self.alerts.close()


def drain_after_run(settings: Settings, engine: Engine) -> DrainResult | None:
    """For `reconcile run`: drain once if e-mail is configured; never fails the run.

    The run has committed by now; a notifier problem is logged (and alerted) instead of
    turning a successful reconciliation into a failed command.
    """
    if settings.email_from is None:
        log.info("notify.skipped", reason="EMAIL_FROM not set")
        return None
    try:
        notifier = Notifier.from_settings(settings)
    except ReconcileError as exc:
        log.error("notify.not_configured", error=str(exc))
        return None
    try:
        return notifier.drain(engine)
    except SQLAlchemyError as exc:
        # The rows stay claimed or pending; the next drain (or a worker) picks them up.
        log.error("notify.database_error", error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    finally:
        notifier.close()
