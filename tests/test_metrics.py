"""Batch metrics: the series each command reports, pushed to a Pushgateway and to a textfile."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from config import Settings, load_settings
from reconcile.apply import Applied
from reconcile.engine import RunResult
from reconcile.errors import LockHeldError, StripeUnavailableError
from reconcile.metrics import (
    BatchFigures,
    Counts,
    build_registry,
    notify_counts,
    record_run,
    recording,
    retry_counts,
    run_counts,
)
from reconcile.metrics_sink import publish
from reconcile.notify import DrainResult
from reconcile.retries import Attempt, RetryResult

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Gateway:
    """What the Pushgateway stand-in received: (method, path, auth header, body)."""

    url: str
    requests: list[tuple[str, str, str | None, str]] = field(default_factory=list)


@pytest.fixture
def pushgateway() -> Iterator[Gateway]:
    """A loopback HTTP server that accepts pushes like a Pushgateway (202, no body)."""
    received: list[tuple[str, str, str | None, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _accept(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            received.append((self.command, self.path, self.headers.get("Authorization"), body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = _accept

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield Gateway(f"http://{host!s}:{port}", received)
    server.shutdown()
    server.server_close()


def _samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _settings(**env: str) -> Settings:
    return load_settings(env, env_file=None)


def _run_result(**changes: Any) -> RunResult:
    values: dict[str, Any] = dict(
        run_id=7, dry_run=False, outcome="corrected", counts={"status": 3, "user_status": 1},
        drift=(), drift_total=4, changed_rows=4, applied=Applied(subscriptions_updated=3,
                                                                 users_updated=1),
        objects_listed=120, stripe_requests=9, rate_limited=2, duration_s=1.5,
    )
    return RunResult(**{**values, **changes})


def test_run_series_have_the_documented_names_and_labels() -> None:
    """A run reports duration, objects, requests, 429s, drift by kind and corrections."""
    figures = BatchFigures("run", True, 1.5, 1_800_000_000.0, run_counts(_run_result()))
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for fam in build_registry(figures).collect() for s in fam.samples}
    assert found[("reconcile_batch_success", ())] == 1
    assert found[("reconcile_batch_duration_seconds", ())] == 1.5
    assert found[("reconcile_batch_last_success_timestamp_seconds", ())] == 1_800_000_000
    assert found[("reconcile_batch_objects_listed", ())] == 120
    assert found[("reconcile_batch_stripe_requests", ())] == 9
    assert found[("reconcile_batch_stripe_rate_limited", ())] == 2
    assert found[("reconcile_batch_drift", (("kind", "status"),))] == 3
    assert found[("reconcile_batch_changed_rows", ())] == 4
    assert found[("reconcile_batch_corrections", (("change", "subscriptions_updated"),))] == 3
    assert found[("reconcile_batch_corrections", (("change", "invoices_inserted"),))] == 0


def test_retry_and_notify_series_list_every_outcome() -> None:
    """Charges by outcome and e-mails sent/failed are always present, zeros included."""
    retry = RetryResult(dry_run=False, candidates=3, attempts=(
        Attempt("in_1", "sub_1", 1, "declined", 1500, "usd", "card_declined"),
        Attempt("in_2", "sub_2", 1, "succeeded", 900, "usd")), skipped=(),
        stripe_requests=8, rate_limited=0, duration_s=0.4)
    counts = retry_counts(retry)
    assert counts.charges is not None
    assert counts.charges["declined"] == 1 and counts.charges["requires_action"] == 0
    emails = notify_counts(DrainResult(claimed=3, sent=2, failed=1))
    assert emails.emails == {"sent": 2, "failed": 1, "retrying": 0, "suppressed": 0,
                             "canceled": 0}


def test_success_is_put_to_the_pushgateway_group(pushgateway: Gateway) -> None:
    """A successful run PUTs its whole group under job/stripe_reconcile/command/run."""
    record_run(_run_result(), _settings(PROMETHEUS_PUSHGATEWAY_URL=pushgateway.url),
               clock=lambda: 1_800_000_000.0)
    (method, path, auth, body), = pushgateway.requests
    assert (method, path, auth) == ("PUT", "/metrics/job/stripe_reconcile/command/run", None)
    samples = _samples(body)
    assert samples[("reconcile_batch_last_success_timestamp_seconds", ())] == 1_800_000_000
    assert samples[("reconcile_batch_drift", (("kind", "user_status"),))] == 1


def test_failure_is_posted_without_a_success_time(pushgateway: Gateway) -> None:
    """A failed run POSTs success=0 and keeps the group's last success time untouched."""
    settings = _settings(PROMETHEUS_PUSHGATEWAY_URL=pushgateway.url)
    with pytest.raises(StripeUnavailableError), recording(settings, "retry-payments"):
        raise StripeUnavailableError("down")
    (method, path, _, body), = pushgateway.requests
    assert (method, path) == ("POST", "/metrics/job/stripe_reconcile/command/retry-payments")
    names = {name for name, _ in _samples(body)}
    assert names == {"reconcile_batch_success", "reconcile_batch_duration_seconds",
                     "reconcile_batch_last_run_timestamp_seconds"}


def test_credentials_in_the_url_become_basic_auth(pushgateway: Gateway) -> None:
    """user:password@ in PROMETHEUS_PUSHGATEWAY_URL is sent as basic auth, not in the URL."""
    url = pushgateway.url.replace("http://", "http://ops:s%40cret@")
    figures = BatchFigures("notify", True, 0.1, 1.0, Counts(emails={"sent": 1}))
    publish(build_registry(figures), "notify", succeeded=True, pushgateway_url=url, textfile=None)
    (_, path, auth, _), = pushgateway.requests
    assert auth == "Basic " + base64.b64encode(b"ops:s@cret").decode()
    assert "cret" not in path


def test_unreachable_pushgateway_never_fails_the_job() -> None:
    """A dead Pushgateway is logged (password masked) and the job goes on."""
    figures = BatchFigures("run", True, 0.1, 1.0)
    with capture_logs() as logs:
        publish(build_registry(figures), "run", succeeded=True, timeout=0.5,
                pushgateway_url="http://ops:hunter2@127.0.0.1:9", textfile=None)
    assert [e["event"] for e in logs] == ["metrics.push_failed"]
    assert "hunter2" not in repr(logs)


def test_textfile_keeps_every_command_and_the_last_success(tmp_path: Path) -> None:
    """Commands share one .prom file; a failure keeps the last success time and counts."""
    path = tmp_path / "reconcile.prom"
    settings = _settings(METRICS_TEXTFILE=str(path))
    record_run(_run_result(), settings, clock=lambda: 100.0)
    with recording(settings, "notify", clock=lambda: 150.0) as batch:
        batch.report(notify_counts(DrainResult(sent=4)))
    with pytest.raises(RuntimeError), recording(settings, "run", clock=lambda: 200.0):
        raise RuntimeError("boom")
    samples = _samples(path.read_text())
    run = ("command", "run")
    assert samples[("reconcile_batch_success", (run,))] == 0
    assert samples[("reconcile_batch_last_run_timestamp_seconds", (run,))] == 200
    assert samples[("reconcile_batch_last_success_timestamp_seconds", (run,))] == 100
    assert samples[("reconcile_batch_drift", (run, ("kind", "status")))] == 3
    assert samples[("reconcile_batch_emails", (("command", "notify"), ("outcome", "sent")))] == 4
    assert list(tmp_path.glob("*.prom")) == [path]


def test_a_success_replaces_stale_series_of_its_command(tmp_path: Path) -> None:
    """A drift kind gone from the latest run disappears from the file."""
    path = tmp_path / "reconcile.prom"
    settings = _settings(METRICS_TEXTFILE=str(path))
    record_run(_run_result(), settings)
    record_run(_run_result(counts={"user_status": 1}), settings)
    kinds = {dict(labels).get("kind") for name, labels in _samples(path.read_text())
             if name == "reconcile_batch_drift"}
    assert kinds == {"user_status"}


def test_locked_out_run_publishes_nothing(tmp_path: Path) -> None:
    """Losing the lock to another host is not a failure and writes no metrics."""
    path = tmp_path / "reconcile.prom"
    with pytest.raises(LockHeldError), recording(_settings(METRICS_TEXTFILE=str(path)), "run"):
        raise LockHeldError("held")
    assert not path.exists()


def test_unwritable_textfile_is_logged_not_raised(tmp_path: Path) -> None:
    """A textfile in a missing directory is a logged warning; the job's result stands."""
    settings = _settings(METRICS_TEXTFILE=str(tmp_path / "missing" / "reconcile.prom"))
    with recording(settings, "notify") as batch:
        batch.report(Counts(emails={"sent": 1}))
