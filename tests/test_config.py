"""Tests for the table-driven settings loader in `config`."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path

import pytest

from config import Secret, Settings, load_settings
from config import parsers as p
from reconcile.errors import ConfigError

# Built by concatenation so secret scanners do not flag these obviously fake values.
SK_TEST = "sk_" + "test_" + "FAKEfakeFAKEfake00001234"
SK_LIVE = "sk_" + "live_" + "51HgT0xKc9Zq8wLmNoPq9xYz"
RK_LIVE = "rk_" + "live_" + "51HgT0xKc9Zq8wLmNoPqAbCd"
PK_TEST = "pk_" + "test_" + "FAKEfakeFAKEfake00005678"
WHSEC_A = "whsec_" + "Ab12Cd34Ef56Gh78Ij90Kl12"
WHSEC_B = "whsec_" + "Zy98Xw76Vu54Ts32Rq10Po98"
SG_KEY = "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
DB_PASSWORD = "hunter2-s3cr3t"
DB_URL = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/billing"

EVERYTHING = {
    "DATABASE_URL": DB_URL,
    "STRIPE_API_KEY": SK_TEST,
    "STRIPE_WEBHOOK_SECRET": WHSEC_A,
    "SENDGRID_API_KEY": SG_KEY,
    "EMAIL_FROM": "billing@example.com",
}
ALL_GROUPS = ("database", "stripe", "webhook", "email")


def load(env: dict[str, str], require: Collection[str] = ()) -> Settings:
    return load_settings(env, env_file=None, require=require)


def problems_of(env: dict[str, str], require: Collection[str] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(env, require)
    return info.value.problems


def test_defaults_apply_when_nothing_is_set() -> None:
    """With an empty environment and no groups required, every default is used."""
    s = load({})
    assert (s.stripe_api_base, s.stripe_max_network_retries) == ("https://api.stripe.com", 5)
    assert (s.reconcile_max_changes, s.reconcile_invoice_lookback_days) == (1000, 45)
    assert (s.reconcile_concurrency, s.log_level, s.log_format) == (1, "INFO", None)
    assert (s.webhook_max_body_bytes, s.webhook_refetch) == (1048576, "conflicts")
    assert (s.email_backend, s.email_file_dir, s.sendgrid_sandbox) == (
        "sendgrid", Path("outbox-mail"), False,
    )
    assert (s.notify_max_age_hours, s.notify_max_attempts) == (72, 8)
    assert (s.retry_policy, s.retry_policy_explicit, s.retry_schedule) == ("stripe", False, ())
    assert s.schedule_reconcile == "0 * * * *"
    assert s.stripe_api_key is None and s.stripe_webhook_secret == () and not s.stripe_livemode


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"DATABASE_URL": "postgres://u:p@h/db"}, "database_url", "postgresql+psycopg://u:p@h/db"),
        ({"DATABASE_URL": "postgresql://h/db"}, "database_url", "postgresql+psycopg://h/db"),
        ({"DATABASE_URL": "postgresql+psycopg://h/db"}, "database_url", "postgresql+psycopg://h/db"),
        ({"STRIPE_API_KEY": SK_TEST}, "stripe_api_key", Secret(SK_TEST)),
        ({"STRIPE_API_BASE": "http://localhost:12111"}, "stripe_api_base", "http://localhost:12111"),
        ({"STRIPE_API_BASE": "http://127.0.0.1:12111/"}, "stripe_api_base", "http://127.0.0.1:12111"),
        ({"STRIPE_API_BASE": "http://[::1]:12111"}, "stripe_api_base", "http://[::1]:12111"),
        ({"STRIPE_MAX_NETWORK_RETRIES": "10"}, "stripe_max_network_retries", 10),
        ({"RECONCILE_MAX_CHANGES": "0"}, "reconcile_max_changes", 0),
        ({"RECONCILE_INVOICE_LOOKBACK_DAYS": "365"}, "reconcile_invoice_lookback_days", 365),
        ({"RECONCILE_CONCURRENCY": "16"}, "reconcile_concurrency", 16),
        ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
        ({"LOG_FORMAT": "JSON"}, "log_format", "json"),
        ({"WEBHOOK_MAX_BODY_BYTES": "1024"}, "webhook_max_body_bytes", 1024),
        ({"WEBHOOK_REFETCH": "Always"}, "webhook_refetch", "always"),
        ({"EMAIL_BACKEND": "file"}, "email_backend", "file"),
        ({"SENDGRID_API_BASE": "http://localhost:3030"}, "sendgrid_api_base", "http://localhost:3030"),
        ({"EMAIL_REPLY_TO": "help@example.com"}, "email_reply_to", "help@example.com"),
        ({"EMAIL_FILE_DIR": "/tmp/mail"}, "email_file_dir", Path("/tmp/mail")),
        ({"SENDGRID_TEMPLATE_ID_PAYMENT_FAILED": "d-123"}, "sendgrid_template_id_payment_failed",
         "d-123"),
        ({"SENDGRID_SANDBOX": "yes"}, "sendgrid_sandbox", True),
        ({"SENDGRID_SANDBOX": "0"}, "sendgrid_sandbox", False),
        ({"NOTIFY_MAX_ATTEMPTS": "1"}, "notify_max_attempts", 1),
        ({"ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/B0"}, "alert_webhook_url",
         Secret("https://hooks.example.com/T0/B0")),
        ({"RETRY_POLICY": "custom", "RETRY_SCHEDULE": "1d, 3d"}, "retry_schedule",
         (timedelta(days=1), timedelta(days=3))),
        ({"SCHEDULE_RECONCILE": "*/15  2 * *  1-5"}, "schedule_reconcile", "*/15 2 * * 1-5"),
        ({"SCHEDULE_RECONCILE": "@daily"}, "schedule_reconcile", "0 0 * * *"),
        ({"WEBHOOK_PUBLIC_URL": "https://x.example.com/hooks/"}, "webhook_public_url",
         "https://x.example.com/hooks"),
        ({"PROMETHEUS_PUSHGATEWAY_URL": "http://pgw:9091"}, "prometheus_pushgateway_url",
         "http://pgw:9091"),
        ({"METRICS_TEXTFILE": "/srv/ne/rec.prom"}, "metrics_textfile", Path("/srv/ne/rec.prom")),
    ],
)
def test_valid_values_are_parsed_and_normalised(
    env: dict[str, str], field: str, expected: object
) -> None:
    """Each accepted spelling turns into its normalised, typed value."""
    assert getattr(load(env), field) == expected


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("DATABASE_URL", "mysql://u:p@h/db", "only supports PostgreSQL"),
        ("DATABASE_URL", "postgresql+psycopg2://h/db", "change the scheme to postgresql+psycopg"),
        ("DATABASE_URL", "db.internal/billing", "is not a URL"),
        ("DATABASE_URL", "postgresql://h:port/db", "invalid port"),
        ("STRIPE_API_KEY", PK_TEST, "publishable key (got 'pk_t…')"),
        ("STRIPE_API_KEY", WHSEC_A, "put it in STRIPE_WEBHOOK_SECRET"),
        ("STRIPE_API_KEY", "ak_" + "x" * 20, "must start with sk_ or rk_"),
        ("STRIPE_API_KEY", "sk_" + "x" * 20, "sk_test_, sk_live_"),
        ("STRIPE_API_BASE", "http://api.stripe.com", "only for 127.0.0.1, localhost or ::1"),
        ("STRIPE_API_BASE", "ftp://api.stripe.com", "must be an http(s) URL"),
        ("STRIPE_MAX_NETWORK_RETRIES", "11", "between 0 and 10"),
        ("STRIPE_MAX_NETWORK_RETRIES", "two", "whole number"),
        ("RECONCILE_MAX_CHANGES", "-1", "at least 0"),
        ("RECONCILE_INVOICE_LOOKBACK_DAYS", "0", "between 1 and 365"),
        ("RECONCILE_CONCURRENCY", "17", "between 1 and 16"),
        ("LOG_LEVEL", "verbose", "DEBUG|INFO|WARNING|ERROR"),
        ("LOG_FORMAT", "xml", "json|console"),
        ("STRIPE_WEBHOOK_SECRET", f"{WHSEC_A},,{WHSEC_B}", "entry 2 is empty"),
        ("STRIPE_WEBHOOK_SECRET", SK_TEST, "is an API key"),
        ("STRIPE_WEBHOOK_SECRET", "secret123456", "must start with whsec_"),
        ("STRIPE_WEBHOOK_SECRET", f"{WHSEC_A},{WHSEC_A}", "repeats an earlier secret"),
        ("WEBHOOK_MAX_BODY_BYTES", "100", "between 1024 and 10485760"),
        ("WEBHOOK_REFETCH", "sometimes", "never|conflicts|always"),
        ("EMAIL_BACKEND", "smtp", "sendgrid|console|file"),
        ("SENDGRID_API_KEY", "ngeVfQFYQlKU0ufo8x5d1A", "SG.<id>.<secret>"),
        ("SENDGRID_API_BASE", "http://api.sendgrid.com", "only for 127.0.0.1"),
        ("EMAIL_FROM", "Billing <billing@example.com>", "bare address"),
        ("EMAIL_REPLY_TO", "help", "e-mail address"),
        ("SENDGRID_TEMPLATE_ID_ACTION_REQUIRED", "123", "starting with d-"),
        ("SENDGRID_SANDBOX", "maybe", "1/0, true/false or yes/no"),
        ("NOTIFY_MAX_AGE_HOURS", "0", "between 1 and 720"),
        ("NOTIFY_MAX_ATTEMPTS", "many", "whole number"),
        ("ALERT_WEBHOOK_URL", "hooks.example.com/T0/B0", "http(s) URL (got 'hook…')"),
        ("RETRY_POLICY", "smart", "stripe|custom"),
        ("SCHEDULE_RECONCILE", "0 * * *", "must have 5 fields, not 4"),
        ("SCHEDULE_RECONCILE", "0 0 * * * *", "seconds field is not supported"),
        ("SCHEDULE_RECONCILE", "@often", "unknown macro"),
        ("WEBHOOK_PUBLIC_URL", "http://x.example.com/hooks", "must use https"),
        ("PROMETHEUS_PUSHGATEWAY_URL", "pgw:9091", "http(s) URL"),
        ("METRICS_TEXTFILE", "metrics.txt", "must end in .prom"),
    ],
)
def test_invalid_values_name_the_variable_the_fault_and_a_fix(
    name: str, raw: str, fragment: str
) -> None:
    """Each rejected value yields one problem: variable name, what is wrong, and a fix."""
    (problem,) = problems_of({name: raw})
    assert problem.startswith(f"{name}: ")
    assert fragment in problem
    assert "; " in problem  # the fix follows the fault


def test_all_problems_are_reported_together() -> None:
    """Three bad variables give one ConfigError that lists all three."""
    with pytest.raises(ConfigError) as info:
        load({"LOG_LEVEL": "loud", "RECONCILE_CONCURRENCY": "99", "STRIPE_API_KEY": PK_TEST})
    assert [problem.split(":")[0] for problem in info.value.problems] == [
        "STRIPE_API_KEY", "RECONCILE_CONCURRENCY", "LOG_LEVEL",
    ]
    assert "3 problem(s)" in str(info.value)
    assert all(problem in str(info.value) for problem in info.value.problems)


def test_required_groups_report_each_missing_setting() -> None:
    """Requiring every group with nothing set lists each required variable once."""
    problems = problems_of({}, require=ALL_GROUPS)
    assert sorted(problem.split(":")[0] for problem in problems) == sorted(EVERYTHING)
    assert all("is required" in x and "set it" in x for x in problems)


def test_everything_required_loads_when_present() -> None:
    """All groups load when their required settings are given."""
    s = load(EVERYTHING, require=ALL_GROUPS)
    assert s.email_from == "billing@example.com"
    assert s.sendgrid_api_key == Secret(SG_KEY)


def test_sendgrid_key_is_required_only_for_the_sendgrid_backend() -> None:
    """The e-mail group needs SENDGRID_API_KEY with the sendgrid backend only."""
    env = {"EMAIL_FROM": "billing@example.com"}
    assert problems_of(env, require=["email"])[0].startswith("SENDGRID_API_KEY: is required")
    assert load({**env, "EMAIL_BACKEND": "console"}, require=["email"]).sendgrid_api_key is None


def test_an_invalid_required_setting_is_reported_once() -> None:
    """A required variable that is set but invalid is not also reported as missing."""
    assert len(problems_of({"DATABASE_URL": "mysql://h/db"}, require=["database"])) == 1


def test_unknown_group_is_a_programming_error() -> None:
    """Naming a group that does not exist raises ValueError, not ConfigError."""
    with pytest.raises(ValueError, match="unknown settings group"):
        load({}, require=["databse"])


def test_custom_retry_policy_needs_a_schedule() -> None:
    """RETRY_POLICY=custom without RETRY_SCHEDULE is a problem even with no group required."""
    (problem,) = problems_of({"RETRY_POLICY": "custom"})
    assert problem.startswith("RETRY_SCHEDULE: is required when RETRY_POLICY=custom")


def test_retry_schedule_without_custom_policy_is_a_problem() -> None:
    """A schedule that would be ignored under the stripe policy is reported."""
    (problem,) = problems_of({"RETRY_SCHEDULE": "1d"})
    assert "only used when RETRY_POLICY=custom" in problem


@pytest.mark.parametrize(("env", "explicit"), [({}, False), ({"RETRY_POLICY": "stripe"}, True)])
def test_retry_policy_remembers_whether_it_was_set(env: dict[str, str], explicit: bool) -> None:
    """retry_policy_explicit is true only when RETRY_POLICY was given."""
    assert load(env).retry_policy_explicit is explicit


@pytest.mark.parametrize(("key", "live"), [(SK_TEST, False), (SK_LIVE, True), (RK_LIVE, True)])
def test_livemode_follows_the_key(key: str, live: bool) -> None:
    """stripe_livemode is derived from the key's live/test prefix."""
    assert load({"STRIPE_API_KEY": key}).stripe_livemode is live


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1d,3d,5d,7d", tuple(timedelta(days=d) for d in (1, 3, 5, 7))),
        ("0d,2d", (timedelta(0), timedelta(days=2))),  # 0d: at the next run
        ("30m, 12h ,1d,1d", (timedelta(minutes=30), timedelta(hours=12), timedelta(days=1),
                             timedelta(days=1))),
    ],
)
def test_retry_schedule_parser_accepts_units_and_ties(
    raw: str, expected: tuple[timedelta, ...]
) -> None:
    """Durations in d, h, m parse in order; equal neighbours are allowed."""
    assert p.durations(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("3d,1d", "must not decrease"), ("1w", "invalid duration"), ("-1d", "invalid duration"),
     ("1d,", "invalid duration"), ("1.5d", "invalid duration")],
)
def test_retry_schedule_parser_rejects_bad_lists(raw: str, fragment: str) -> None:
    """Decreasing, negative, unknown-unit and malformed entries are rejected."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        p.durations(raw)


def test_webhook_secret_list_keeps_every_secret_in_order() -> None:
    """Comma-separated signing secrets become a tuple of Secrets, spaces trimmed."""
    s = load({"STRIPE_WEBHOOK_SECRET": f" {WHSEC_A} , {WHSEC_B}"})
    assert [secret.reveal() for secret in s.stripe_webhook_secret] == [WHSEC_A, WHSEC_B]
