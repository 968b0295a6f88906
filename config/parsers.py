"""Parsers for single settings.

Each parser takes the raw (stripped, non-empty) string and returns the typed value, or raises
ValueError whose message says what is wrong and how to fix it; the loader prefixes the
variable name. Parsers of secrets never put the raw value in a message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from config.secret import Secret, mask_url_password, preview

Parser = Callable[[str], object]

_LOOPBACK_NAMES = frozenset({"localhost"})
_EMAIL = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;.]+")
_DURATION = re.compile(r"(\d+)([dhm])")
_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-?]+")
# Standard macros are expanded so the scheduler only ever sees the five-field form.
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def show(raw: str) -> str:
    """Quote a non-secret value for an error message, shortened so a pasted blob stays legible."""
    return repr(raw if len(raw) <= 60 else f"{raw[:57]}…")


def text(raw: str) -> str:
    """Accept any non-empty string."""
    return raw


def path(raw: str) -> Path:
    """Accept a filesystem path; existence is checked by whoever writes there."""
    return Path(raw).expanduser()


def integer(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """Build a parser for a whole number within [lo, hi]."""
    bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"

    def parse(raw: str) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise ValueError(
                f"must be a whole number (got {show(raw)}); write digits only, {bounds}"
            ) from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"must be {bounds} (got {value}); pick a value in that range")
        return value

    return parse


def choice(*options: str, upper: bool = False) -> Callable[[str], str]:
    """Build a case-insensitive parser for one of `options`, normalised to their case."""
    listed = "|".join(options)

    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError(f"must be one of {listed} (got {show(raw)}); use one of those")
        return value

    return parse


def boolean(raw: str) -> bool:
    """Accept 1/0, true/false, yes/no in any case."""
    value = raw.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"must be a boolean (got {show(raw)}); use 1/0, true/false or yes/no")


def database_url(raw: str) -> str:
    """Accept a PostgreSQL URL and normalise its scheme to the psycopg 3 driver."""
    shown = show(mask_url_password(raw))
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ValueError(
            f"is not a URL (got {shown}); write postgresql://user:password@host:5432/dbname"
        )
    scheme = scheme.lower()
    if scheme == "postgresql+psycopg2":
        raise ValueError(
            f"uses the psycopg2 driver, which is not installed (got {shown}); "
            "change the scheme to postgresql+psycopg:// (psycopg 3)"
        )
    if scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError(
            f"must be a PostgreSQL URL (got scheme {scheme!r}); this service only supports "
            "PostgreSQL: use postgresql://user:password@host:5432/dbname"
        )
    url = f"postgresql+psycopg://{rest}"
    try:
        urlsplit(url).port  # noqa: B018 - evaluated only to validate the port
    except ValueError:
        raise ValueError(
            f"has an invalid port (got {shown}); the port must be a number such as 5432, "
            "and special characters in the password must be percent-encoded"
        ) from None
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url(
    *, plain_http: str = "loopback", secret: bool = False
) -> Callable[[str], str]:
    """Build a parser for an http(s) URL without trailing slash.

    `plain_http` is "loopback" (http only for local emulators), "never" or "anywhere".
    """

    def parse(raw: str) -> str:
        shown = repr(preview(raw)) if secret else show(mask_url_password(raw))
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL (got {shown}); write https://host/path")
        try:
            parts.port  # noqa: B018 - evaluated only to validate the port
        except ValueError:
            raise ValueError(f"has an invalid port (got {shown}); use a number") from None
        if parts.scheme == "http" and plain_http != "anywhere":
            if plain_http == "never":
                raise ValueError(f"must use https (got {shown}); change the scheme to https://")
            if not _is_loopback(parts.hostname):
                raise ValueError(
                    f"may use plain http only for 127.0.0.1, localhost or ::1 (got {shown}); "
                    "use https:// for remote hosts"
                )
        return urlunsplit(parts._replace(path=parts.path.rstrip("/")))

    return parse


def secret_url(raw: str) -> Secret:
    """Accept an https URL that itself is a credential (e.g. a chat incoming-webhook URL)."""
    return Secret(http_url(secret=True)(raw))


def stripe_api_key(raw: str) -> Secret:
    """Accept a Stripe secret (sk_) or restricted (rk_) key."""
    if raw.startswith("pk_"):
        raise ValueError(
            f"is a publishable key (got {preview(raw)!r}); the server needs a secret (sk_) or "
            "restricted (rk_) key from the Stripe dashboard"
        )
    if raw.startswith("whsec_"):
        raise ValueError(
            f"is a webhook signing secret (got {preview(raw)!r}); put it in "
            "STRIPE_WEBHOOK_SECRET and use an sk_ or rk_ key here"
        )
    if not raw.startswith(("sk_", "rk_")):
        raise ValueError(
            f"must start with sk_ or rk_ (got {preview(raw)!r}); use a secret or restricted "
            "key from the Stripe dashboard"
        )
    prefix = raw[:8]
    if prefix not in ("sk_test_", "sk_live_", "rk_test_", "rk_live_") or len(raw) <= 8:
        raise ValueError(
            f"must start with sk_test_, sk_live_, rk_test_ or rk_live_ followed by the key "
            f"(got {preview(raw)!r}); copy the whole key from the Stripe dashboard"
        )
    return Secret(raw)


def stripe_livemode(key: Secret | None) -> bool:
    """Tell whether a (validated) Stripe key is a live-mode key."""
    return key is not None and key.reveal()[3:8] == "live_"


def webhook_secrets(raw: str) -> tuple[Secret, ...]:
    """Accept one whsec_ signing secret, or several comma-separated while rolling them."""
    items = [item.strip() for item in raw.split(",")]
    secrets: list[Secret] = []
    for number, item in enumerate(items, start=1):
        where = f"entry {number}" if len(items) > 1 else "value"
        if not item:
            raise ValueError(f"{where} is empty; remove the stray comma")
        if item.startswith(("sk_", "rk_")):
            raise ValueError(
                f"{where} is an API key (got {preview(item)!r}); use the endpoint's signing "
                "secret (whsec_…) from the Stripe dashboard or `stripe listen`"
            )
        if not item.startswith("whsec_") or len(item) <= len("whsec_"):
            raise ValueError(
                f"{where} must start with whsec_ (got {preview(item)!r}); copy the endpoint's "
                "signing secret from the Stripe dashboard"
            )
        if Secret(item) in secrets:
            raise ValueError(f"{where} repeats an earlier secret; list each secret once")
        secrets.append(Secret(item))
    return tuple(secrets)


def sendgrid_api_key(raw: str) -> Secret:
    """Accept a SendGrid API key (SG.<id>.<secret>)."""
    if not raw.startswith("SG.") or raw.count(".") != 2:
        raise ValueError(
            f"must look like SG.<id>.<secret> (got {preview(raw)!r}); create an API key with "
            "Mail Send permission in SendGrid"
        )
    return Secret(raw)


def email_address(raw: str) -> str:
    """Accept a bare e-mail address."""
    if not _EMAIL.fullmatch(raw):
        raise ValueError(
            f"must be an e-mail address (got {show(raw)}); write a bare address such as "
            "billing@example.com"
        )
    return raw


def template_id(raw: str) -> str:
    """Accept a SendGrid dynamic template id (d-…)."""
    if not raw.startswith("d-") or len(raw) <= 2:
        raise ValueError(
            f"must be a dynamic template id starting with d- (got {show(raw)}); copy it from "
            "SendGrid > Email API > Dynamic Templates"
        )
    return raw


def durations(raw: str) -> tuple[timedelta, ...]:
    """Accept a non-decreasing comma list of positive durations such as 1d,3d,12h,30m."""
    result: list[timedelta] = []
    for item in (part.strip() for part in raw.split(",")):
        match = _DURATION.fullmatch(item)
        if not match:
            raise ValueError(
                f"has an invalid duration {show(item)}; write a whole number followed by "
                "d, h or m, comma-separated, e.g. 1d,3d,5d,7d"
            )
        delay = timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
        if result and delay < result[-1]:
            raise ValueError(
                f"must not decrease ({show(item)} comes after a longer delay); "
                "list the delays in ascending order"
            )
        result.append(delay)
    return tuple(result)


def cron(raw: str) -> str:
    """Accept a five-field cron expression (or a standard @macro), normalising whitespace."""
    if raw.startswith("@"):
        if raw.lower() in _CRON_MACROS:
            return _CRON_MACROS[raw.lower()]
        raise ValueError(
            f"has an unknown macro {show(raw)}; use one of {', '.join(_CRON_MACROS)} "
            "or five fields"
        )
    fields = raw.split()
    if len(fields) != 5:
        hint = " (the seconds field is not supported)" if len(fields) == 6 else ""
        raise ValueError(
            f"must have 5 fields, not {len(fields)}{hint} (got {show(raw)}); "
            "write minute hour day-of-month month day-of-week, e.g. '0 * * * *'"
        )
    bad = [f for f in fields if not _CRON_FIELD.fullmatch(f)]
    if bad:
        raise ValueError(
            f"has an invalid field {show(bad[0])}; fields use digits, names, * / , - only"
        )
    return " ".join(fields)


def prom_file(raw: str) -> Path:
    """Accept a path for node_exporter's textfile collector, which only reads *.prom files."""
    result = path(raw)
    if result.suffix != ".prom":
        raise ValueError(
            f"must end in .prom (got {show(raw)}); node_exporter's textfile collector "
            "ignores other files"
        )
    return result
