"""Structured logging with secrets redacted from every event.

structlog events and stdlib records (stripe, sendgrid, urllib3, uvicorn, ...) share one
handler whose formatter runs `redact_secrets` last before rendering, so nothing reaches the
stream unredacted, whichever library logged it.
"""

from __future__ import annotations

# This module shadows the stdlib name only for relative imports; the alias keeps that obvious.
import logging as stdlib_logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

_LEVELS: Mapping[str, int] = {
    "DEBUG": stdlib_logging.DEBUG,
    "INFO": stdlib_logging.INFO,
    "WARNING": stdlib_logging.WARNING,
    "ERROR": stdlib_logging.ERROR,
}

# Matched anywhere in a key, case-insensitively: api_key, client_secret, Authorization, ...
_SENSITIVE_KEY = re.compile(r"api[_-]?key|secret|passw(?:or)?d|authorization|token|cookie", re.I)

# The look-behind stops words such as "task_test_..." from being mistaken for keys.
_SECRET_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![A-Za-z0-9])([sr]k_(?:test|live)_)\w+"), rf"\1{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9])whsec_\w+"), f"whsec_{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9])SG\.[\w-]+\.[\w-]+"), f"SG.{REDACTED}"),
    (re.compile(r"\b(Bearer)\s+\S+", re.I), rf"\1 {REDACTED}"),
    # Up to the last @ before a slash or space, so an unencoded @ in the password is covered.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^\s/]*@"), rf"\1:{REDACTED}@"),
    # PaymentIntent/SetupIntent client secrets (pi_..._secret_...) let a client confirm payment.
    (re.compile(r"(_secret_)\w+"), rf"\1{REDACTED}"),
)

# Libraries whose records must go through our handler. uvicorn installs its own handlers
# (and propagate=False) when run with its default log_config; start it with log_config=None.
ROUTED_LOGGERS = (
    "stripe", "sendgrid", "python_http_client", "urllib3",
    "uvicorn", "uvicorn.error", "uvicorn.access",
)
# stripe logs request details and python_http_client whole requests (headers included) at
# DEBUG/INFO; those never leave the process, whatever LOG_LEVEL says.
QUIETED_LOGGERS: Mapping[str, int] = {
    "stripe": stdlib_logging.WARNING,
    "python_http_client": stdlib_logging.WARNING,
}
_MAX_DEPTH = 6


def redact_text(text: str) -> str:
    """Mask every Stripe/SendGrid secret, bearer token and URL password inside `text`."""
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: object, depth: int) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: _redact_item(str(key), item, depth + 1) for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item, depth + 1) for item in value]
    # The renderers would print repr() anyway; scrubbing it covers objects that embed secrets.
    return redact_text(repr(value))


def _redact_item(key: str, value: object, depth: int) -> object:
    if value is not None and _SENSITIVE_KEY.search(key):
        return REDACTED
    return _redact_value(value, depth)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact sensitive keys and secrets inside values, recursively."""
    return {key: _redact_item(key, value, 0) for key, value in event_dict.items()}


class _RedactingHandler(stdlib_logging.StreamHandler[TextIO]):
    """The one handler configure_logging installs; its type lets a re-run find and replace it."""


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        # Closed or stream-like objects without a terminal behind them.
        return False


def configure_logging(
    *, level: str = "INFO", fmt: str | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to `stream` (default stderr), secrets redacted.

    `fmt` is "json" or "console"; None picks JSON unless `stream` is a terminal. Calling
    it again replaces the previous configuration instead of adding a second handler.
    """
    numeric = _LEVELS.get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    if fmt not in (None, "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; use json or console")
    out = sys.stderr if stream is None else stream
    as_json = fmt == "json" or (fmt is None and not _is_tty(out))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Off so loggers created at import time pick up a later (re)configuration.
        cache_logger_on_first_use=False,
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # No ExtraAdder: library extras (uvicorn's ANSI color_message) are noise, not data.
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            # Tracebacks become text before redaction, so secrets in exception messages
            # are masked too (at the cost of the console renderer's pretty tracebacks).
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = _RedactingHandler(out)
    handler.setFormatter(formatter)

    root = stdlib_logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RedactingHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ROUTED_LOGGERS:
        routed = stdlib_logging.getLogger(name)
        for own in list(routed.handlers):
            routed.removeHandler(own)
        routed.propagate = True
    for name, quiet_level in QUIETED_LOGGERS.items():
        stdlib_logging.getLogger(name).setLevel(quiet_level)


def get_logger(name: str, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named `name` (use the module's __name__)."""
    return structlog.stdlib.get_logger(name, **initial_values)
