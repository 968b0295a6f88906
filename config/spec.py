"""The table of settings: one row per environment variable.

This tuple drives parsing, validation, the example.env check and the README table, so adding
a setting means adding a row here and a field on `Settings` (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from config import parsers as p

GROUPS = frozenset({"database", "stripe", "webhook", "email"})


@dataclass(frozen=True)
class SettingSpec:
    """How one environment variable is read.

    `default` is raw text run through `parse` like any other value, so defaults cannot
    drift from their own validation; None means "unset" and the field gets `unset`.
    A setting is required when one of `required_for` is among the requested groups (or
    `required_for` is empty) and, if given, the `required_if` (variable, value) holds.
    """

    env: str
    parse: p.Parser
    doc: str
    default: str | None = None
    unset: object = None
    required_for: frozenset[str] = frozenset()
    required_if: tuple[str, str] | None = None
    secret: bool = False

    @property
    def field(self) -> str:
        """The attribute name on Settings."""
        return self.env.lower()

    def is_required(self, groups: frozenset[str], values: Mapping[str, object]) -> bool:
        """Tell whether this setting must be present, given groups and other parsed values."""
        if self.required_for and not self.required_for & groups:
            return False
        if self.required_if is not None:
            other, wanted = self.required_if
            return values.get(other.lower()) == wanted
        return bool(self.required_for)


def _needs(*groups: str) -> frozenset[str]:
    return frozenset(groups)


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "DATABASE_URL", p.database_url, required_for=_needs("database"),
        doc="PostgreSQL URL (postgres://, postgresql:// or postgresql+psycopg://).",
    ),
    SettingSpec(
        "STRIPE_API_KEY", p.stripe_api_key, required_for=_needs("stripe"), secret=True,
        doc="Stripe secret or restricted key (sk_test_, sk_live_, rk_test_, rk_live_).",
    ),
    SettingSpec(
        "STRIPE_API_BASE", p.http_url(), default="https://api.stripe.com",
        doc="Stripe API base URL; plain http only for a local emulator on loopback.",
    ),
    SettingSpec(
        "STRIPE_MAX_NETWORK_RETRIES", p.integer(0, 10), default="5",
        doc="Retries per Stripe request on network errors, 5xx and 429 (0-10, with backoff).",
    ),
    SettingSpec(
        "RECONCILE_MAX_CHANGES", p.integer(0), default="1000",
        doc="Safety valve: a run that would change more rows than this writes nothing.",
    ),
    SettingSpec(
        "RECONCILE_INVOICE_LOOKBACK_DAYS", p.integer(1, 365), default="45",
        doc="How far back, in days, a run reads invoices (1-365).",
    ),
    SettingSpec(
        "RECONCILE_CONCURRENCY", p.integer(1, 16), default="1",
        doc="How much work a reconciliation run does in parallel (1-16).",
    ),
    SettingSpec(
        "LOG_LEVEL", p.choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), default="INFO",
        doc="Minimum log level: DEBUG, INFO, WARNING or ERROR.",
    ),
    SettingSpec(
        "LOG_FORMAT", p.choice("json", "console"),
        doc="json or console; unset means console on a terminal, JSON otherwise.",
    ),
    SettingSpec(
        "STRIPE_WEBHOOK_SECRET", p.webhook_secrets, unset=(), required_for=_needs("webhook"),
        secret=True,
        doc="Endpoint signing secret (whsec_…); comma-separate several while rolling.",
    ),
    SettingSpec(
        "WEBHOOK_MAX_BODY_BYTES", p.integer(1024, 10 * 1024 * 1024), default="1048576",
        doc="Largest webhook body accepted, in bytes (1 KiB-10 MiB).",
    ),
    SettingSpec(
        "WEBHOOK_REFETCH", p.choice("never", "conflicts", "always"), default="conflicts",
        doc="When the webhook receiver re-reads the object from Stripe: never, conflicts, always.",
    ),
    SettingSpec(
        "EMAIL_BACKEND", p.choice("sendgrid", "console", "file"), default="sendgrid",
        doc="Where notification e-mails go: sendgrid, console (log) or file (EMAIL_FILE_DIR).",
    ),
    SettingSpec(
        "SENDGRID_API_KEY", p.sendgrid_api_key, required_for=_needs("email"),
        required_if=("EMAIL_BACKEND", "sendgrid"), secret=True,
        doc="SendGrid API key (SG.…) with Mail Send permission; needed for the sendgrid backend.",
    ),
    SettingSpec(
        "SENDGRID_API_BASE", p.http_url(), default="https://api.sendgrid.com",
        doc="SendGrid API base URL; plain http only for a local mock on loopback.",
    ),
    SettingSpec(
        "EMAIL_FROM", p.email_address, required_for=_needs("email"),
        doc="Sender address of notification e-mails (a verified SendGrid sender).",
    ),
    SettingSpec(
        "EMAIL_REPLY_TO", p.email_address,
        doc="Reply-To address of notification e-mails.",
    ),
    SettingSpec(
        "EMAIL_FILE_DIR", p.path, default="./outbox-mail",
        doc="Directory the file backend writes e-mails to.",
    ),
    SettingSpec(
        "SENDGRID_TEMPLATE_ID_PAYMENT_FAILED", p.template_id,
        doc="Dynamic template (d-…) for payment-failed mails; unset uses the built-in text.",
    ),
    SettingSpec(
        "SENDGRID_TEMPLATE_ID_ACTION_REQUIRED", p.template_id,
        doc="Dynamic template (d-…) for action-required mails; unset uses the built-in text.",
    ),
    SettingSpec(
        "SENDGRID_SANDBOX", p.boolean, default="false",
        doc="Send through SendGrid's sandbox mode (accepted, never delivered): 1/0, yes/no.",
    ),
    SettingSpec(
        "NOTIFY_MAX_AGE_HOURS", p.integer(1, 720), default="72",
        doc="Oldest an outbox notification may be, in hours, and still be sent (1-720).",
    ),
    SettingSpec(
        "NOTIFY_MAX_ATTEMPTS", p.integer(1, 50), default="8",
        doc="Delivery attempts per outbox notification before giving up (1-50).",
    ),
    SettingSpec(
        "ALERT_WEBHOOK_URL", p.secret_url, secret=True,
        doc="URL that operator alerts are POSTed to (such URLs usually embed a token).",
    ),
    SettingSpec(
        "RETRY_POLICY", p.choice("stripe", "custom"), default="stripe",
        doc="Who schedules payment retries: stripe (Smart Retries) or custom (RETRY_SCHEDULE).",
    ),
    SettingSpec(
        "RETRY_SCHEDULE", p.durations, unset=(), required_if=("RETRY_POLICY", "custom"),
        doc="Delays between payment retries, non-decreasing, e.g. 1d,3d,5d,7d (units d, h, m).",
    ),
    SettingSpec(
        "SCHEDULE_RECONCILE", p.cron, default="0 * * * *",
        doc="Cron expression (5 fields) for scheduled reconciliation runs.",
    ),
    SettingSpec(
        "WEBHOOK_PUBLIC_URL", p.http_url(plain_http="never"),
        doc="Public https URL that Stripe sends webhooks to.",
    ),
    SettingSpec(
        "PROMETHEUS_PUSHGATEWAY_URL", p.http_url(plain_http="anywhere"),
        doc="Prometheus Pushgateway to push run metrics to.",
    ),
    SettingSpec(
        "METRICS_TEXTFILE", p.prom_file,
        doc="File (ending in .prom) for node_exporter's textfile collector to read metrics from.",
    ),
)

SPECS_BY_ENV: Mapping[str, SettingSpec] = MappingProxyType({spec.env: spec for spec in SPECS})


def render_markdown_table() -> str:
    """Render the settings as a Markdown table for the README."""
    rows = [
        "| Variable | Default | Required for | Secret | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in SPECS:
        default = f"`{spec.default}`" if spec.default is not None else ""
        required = ", ".join(sorted(spec.required_for))
        if spec.required_if is not None:
            condition = f"{spec.required_if[0]}={spec.required_if[1]}"
            required = f"{required} (if {condition})" if required else f"if {condition}"
        doc = spec.doc.replace("|", "\\|")
        rows.append(
            f"| `{spec.env}` | {default} | {required} | {'yes' if spec.secret else ''} | {doc} |"
        )
    return "\n".join(rows) + "\n"
