"""Tests for reconcile.logging: output shape, level filtering and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from config.secret import Secret
from reconcile.logging import (
    QUIETED_LOGGERS,
    REDACTED,
    ROUTED_LOGGERS,
    configure_logging,
    get_logger,
    redact_text,
)

# Built by concatenation so secret scanners do not flag these obviously fake values.
SECRETS = {
    "stripe secret key": "sk_" + "live_" + "51HgT0xKc9Zq8wLmNoPq9xYz",
    "stripe test key": "sk_" + "test_" + "FAKEfakeFAKEfake00001234",
    "restricted key": "rk_" + "live_" + "51HgT0xKc9Zq8wLmNoPqAbCd",
    "restricted test key": "rk_" + "test_" + "51HgT0xKc9Zq8wLmNoPqAbCd",
    "webhook secret": "whsec_" + "Ab12Cd34Ef56Gh78Ij90Kl12",
    "sendgrid key": "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbih",
    "bearer token": "Bearer " + "eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "url password": "postgresql://app:" + "hunter2-s3cr3t" + "@db.internal:5432/billing",
    "client secret": "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_" + "YrKJUKribcBjcG8HVhfZluoGH",
}
# The part of each secret that must never be printed.
HIDDEN = {
    name: value.split(" ", 1)[-1] if name == "bearer token"
    else "hunter2-s3cr3t" if name == "url password"
    else value.rsplit("_secret_", 1)[-1] if name == "client secret"
    else value
    for name, value in SECRETS.items()
}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put stdlib and structlog configuration back so other tests see it unchanged."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    names = (*ROUTED_LOGGERS, *QUIETED_LOGGERS)
    loggers = [logging.getLogger(name) for name in names]
    saved = {lg.name: (lg.level, lg.propagate, list(lg.handlers)) for lg in loggers}
    saved_structlog = structlog.get_config()
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers
    structlog.configure(**saved_structlog)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_event_level_logger_and_utc_timestamp() -> None:
    """A non-terminal stream gets one JSON object per event with the standard keys."""
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("reconcile.test").info("run.started", run_id=7)
    (line,) = json_lines(out)
    assert line["event"] == "run.started"
    assert (line["level"], line["logger"], line["run_id"]) == ("info", "reconcile.test", 7)
    assert ISO_UTC.fullmatch(line["timestamp"])


@pytest.mark.parametrize(
    ("fmt", "stream", "is_json"),
    [(None, FakeTerminal(), False), ("json", FakeTerminal(), True),
     ("console", io.StringIO(), False), (None, io.StringIO(), True)],
)
def test_format_follows_the_setting_or_the_terminal(
    fmt: str | None, stream: io.StringIO, is_json: bool
) -> None:
    """json/console are honoured; unset means console on a terminal and JSON elsewhere."""
    configure_logging(fmt=fmt, stream=stream)
    get_logger("t").warning("hello", answer=42)
    text = stream.getvalue()
    assert text.startswith("{") is is_json
    assert "hello" in text and "42" in text


def test_debug_is_suppressed_at_info_and_shown_at_debug() -> None:
    """Events below the configured level are dropped, for structlog and stdlib alike."""
    out = io.StringIO()
    configure_logging(level="INFO", stream=out)
    get_logger("t").debug("hidden.structlog")
    logging.getLogger("app").debug("hidden.stdlib")
    assert out.getvalue() == ""
    configure_logging(level="debug", stream=out)
    get_logger("t").debug("shown.structlog")
    logging.getLogger("app").debug("shown.stdlib")
    assert [line["event"] for line in json_lines(out)] == ["shown.structlog", "shown.stdlib"]


@pytest.mark.parametrize("name", list(SECRETS))
def test_secret_values_are_masked_in_events_and_fields(name: str) -> None:
    """Each secret pattern is masked inside the message and inside any field value."""
    out = io.StringIO()
    configure_logging(stream=out)
    secret = SECRETS[name]
    get_logger("t").info(f"calling with {secret}", detail=f"x {secret} y", nested={"a": [secret]})
    (line,) = json_lines(out)
    assert HIDDEN[name] not in out.getvalue()
    assert REDACTED in line["event"] and REDACTED in line["detail"]
    assert REDACTED in line["nested"]["a"][0]


@pytest.mark.parametrize(
    "key", ["api_key", "stripe_api_key", "client_secret", "password", "Authorization",
            "access_token", "apikey"],
)
def test_sensitive_keys_are_redacted_whatever_the_value(key: str) -> None:
    """Keys named like credentials have their value replaced, at top level and nested."""
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("t").info("request", **{key: "plain-value-1"}, headers={key: "plain-value-2"})
    (line,) = json_lines(out)
    assert "plain-value" not in out.getvalue()
    assert line[key] == REDACTED and line["headers"][key] == REDACTED


def test_secret_objects_stay_masked() -> None:
    """A config Secret logged as a value shows only its masked form."""
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("t").info("loaded", key=Secret(SECRETS["stripe secret key"]))
    assert SECRETS["stripe secret key"] not in out.getvalue()
    assert json_lines(out)[0]["key"] == "Secret('sk_live_…9xYz')"


@pytest.mark.parametrize("name", list(SECRETS))
def test_stdlib_stripe_records_are_redacted(name: str) -> None:
    """A record from the stdlib `stripe` logger, message and args, is redacted too."""
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("stripe").warning("Request failed for %s", SECRETS[name])
    (line,) = json_lines(out)
    assert HIDDEN[name] not in out.getvalue()
    assert (line["logger"], line["level"]) == ("stripe", "warning")
    assert REDACTED in line["event"]


def test_console_output_is_redacted_as_well() -> None:
    """The console renderer receives already-redacted events."""
    out = io.StringIO()
    configure_logging(fmt="console", stream=out)
    logging.getLogger("uvicorn.error").error("auth %s", SECRETS["webhook secret"])
    get_logger("t").info("x", password="pw-123456")
    assert HIDDEN["webhook secret"] not in out.getvalue() and "pw-123456" not in out.getvalue()


def test_chatty_client_loggers_are_held_at_warning_even_at_debug() -> None:
    """stripe and python_http_client debug/info never appear; their warnings do."""
    out = io.StringIO()
    configure_logging(level="DEBUG", stream=out)
    for name in ("stripe", "python_http_client"):
        logging.getLogger(name).debug("body %s", "{...}")
        logging.getLogger(name).info("headers")
        logging.getLogger(name).warning("%s warned", name)
    logging.getLogger("urllib3.connectionpool").debug("connecting")
    events = [line["event"] for line in json_lines(out)]
    assert events == ["stripe warned", "python_http_client warned", "connecting"]


def test_library_handlers_are_replaced_by_propagation() -> None:
    """Handlers a library installed on its logger are removed so records reach ours."""
    stray = io.StringIO()
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(stray))
    logging.getLogger("uvicorn.access").propagate = False
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("uvicorn.access").info("GET /webhook?key=%s", SECRETS["stripe test key"])
    assert stray.getvalue() == ""
    assert json_lines(out)[0]["logger"] == "uvicorn.access"
    assert HIDDEN["stripe test key"] not in out.getvalue()


def test_exceptions_are_rendered_and_redacted() -> None:
    """log.exception adds the traceback, with secrets in the exception message masked."""
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise RuntimeError(f"Invalid API Key provided: {SECRETS['stripe secret key']}")
    except RuntimeError:
        get_logger("t").exception("stripe.failed")
    (line,) = json_lines(out)
    assert "Traceback" in line["exception"] and "RuntimeError" in line["exception"]
    assert SECRETS["stripe secret key"] not in out.getvalue()


def test_configuring_twice_does_not_stack_handlers() -> None:
    """A second call replaces the first: one line per event, on the new stream only."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger("t").info("once")
    logging.getLogger("app").warning("twice?")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once", "twice?"]


@pytest.mark.parametrize("kwargs", [{"level": "VERBOSE"}, {"fmt": "xml"}])
def test_invalid_level_or_format_is_rejected(kwargs: dict[str, str]) -> None:
    """An unknown level or format raises ValueError instead of logging silently."""
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(stream=io.StringIO(), **kwargs)


def test_redact_text_leaves_ordinary_text_alone() -> None:
    """Words that merely resemble key prefixes, and password-less URLs, are not touched."""
    text = "task_test_run ok; see https://api.stripe.com/v1/invoices and SG.com"
    assert redact_text(text) == text
