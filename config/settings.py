"""The typed, validated settings object the rest of the product receives."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Literal

from config.secret import Secret, mask_url_password

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "console"]
WebhookRefetch = Literal["never", "conflicts", "always"]
EmailBackend = Literal["sendgrid", "console", "file"]
RetryPolicy = Literal["stripe", "custom"]

# Fields computed from other settings rather than read from a variable of their own.
DERIVED_FIELDS = frozenset({"stripe_livemode", "retry_policy_explicit"})


@dataclass(frozen=True, repr=False, kw_only=True)
class Settings:
    """Every setting, parsed and validated; field names are the lower-cased variable names.

    Optional settings that were not given are None (or an empty tuple for lists).
    """

    database_url: str | None
    stripe_api_key: Secret | None
    stripe_livemode: bool
    stripe_api_base: str
    stripe_max_network_retries: int
    reconcile_max_changes: int
    reconcile_invoice_lookback_days: int
    reconcile_concurrency: int
    log_level: LogLevel
    log_format: LogFormat | None
    stripe_webhook_secret: tuple[Secret, ...]
    webhook_max_body_bytes: int
    webhook_refetch: WebhookRefetch
    email_backend: EmailBackend
    sendgrid_api_key: Secret | None
    sendgrid_api_base: str
    email_from: str | None
    email_reply_to: str | None
    email_file_dir: Path
    sendgrid_template_id_payment_failed: str | None
    sendgrid_template_id_action_required: str | None
    sendgrid_sandbox: bool
    notify_max_age_hours: int
    notify_max_attempts: int
    alert_webhook_url: Secret | None
    retry_policy: RetryPolicy
    retry_policy_explicit: bool
    retry_schedule: tuple[timedelta, ...]
    schedule_reconcile: str
    webhook_public_url: str | None
    prometheus_pushgateway_url: str | None
    metrics_textfile: Path | None

    def __repr__(self) -> str:
        # Secrets mask themselves; URLs may still carry a password (DATABASE_URL, a
        # Pushgateway behind basic auth), so every string is scrubbed before display.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = repr(mask_url_password(value)) if isinstance(value, str) else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"
