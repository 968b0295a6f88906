"""`reconcile serve` for real: a subprocess on 127.0.0.1, signed events over HTTP, the real
Stripe gateway against a local stand-in, graceful SIGTERM, several workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from cli import main
from reconcile.webhook import WEBHOOK_PATH
from tests import payloads as p
from tests.dbutil import add_user, subscription_row
from tests.test_webhook_support import (
    API_KEY,
    SECRET,
    StripeStub,
    encode,
    event,
    ledger,
    sign,
    stripe_stub,
)

ROOT = Path(__file__).resolve().parent.parent
# After a graceful shutdown uvicorn re-raises the signal, so the exit is "killed by SIGTERM".
STOPPED = (0, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    db_url: str, stripe_base: str, tmp_path: Path, *, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Run `reconcile serve`; yields its base URL, the process and its log file."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "PG"))},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": "json",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from cli import main; main()", "serve",
             "--port", str(port), "--workers", str(workers)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{base}/readyz", trust_env=False).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "reconcile serve did not get ready"
                time.sleep(0.1)
            yield base, proc, log_path
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def send(base: str, payload: dict[str, Any]) -> httpx.Response:
    body = encode(payload)
    return httpx.post(f"{base}{WEBHOOK_PATH}", content=body, timeout=30, trust_env=False,
                      headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"})


def log_events(log_path: Path) -> list[str]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [str(line["event"]) for line in lines]


def test_serve_applies_signed_events_over_http_and_stops_on_sigterm(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Over real HTTP: applied, duplicate, rejected, metrics; SIGTERM exits cleanly."""
    add_user(engine, "cus_1")
    body = event("customer.subscription.created", p.subscription("sub_1", "cus_1"), created=p.T0)
    with stripe_stub(StripeStub()) as stripe_base, \
            serving(db_url, stripe_base, tmp_path) as (base, proc, log_path):
        assert send(base, body).json() == {"received": True, "outcome": "applied"}
        assert send(base, body).json()["outcome"] == "duplicate"
        bad = httpx.post(f"{base}{WEBHOOK_PATH}", content=b"{}", trust_env=False,
                         headers={"Stripe-Signature": "t=1,v1=00"})
        assert bad.status_code == 400
        metrics = httpx.get(f"{base}/metrics", trust_env=False).text
        assert 'stripe_webhook_rejections_total{reason="bad_signature"} 1.0' in metrics
        assert httpx.get(f"{base}/healthz", trust_env=False).json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in STOPPED
    assert subscription_row(engine, "sub_1")["status"] == "active"
    events = log_events(log_path)
    assert events.count("webhook.event_applied") == 1 and "webhook.stopped" in events
    assert SECRET not in log_path.read_text()


def test_sigterm_lets_the_in_flight_request_finish(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A request busy re-fetching from (slow) Stripe when SIGTERM arrives still gets its 200."""
    stub = StripeStub(delay_s=1.5)
    stub.subscriptions["sub_1"] = p.subscription("sub_1", "cus_1", cancel_at_period_end=True)
    with stripe_stub(stub) as stripe_base, \
            serving(db_url, stripe_base, tmp_path) as (base, proc, _):
        assert send(base, event("customer.subscription.updated", p.subscription("sub_1", "cus_1"),
                                created=p.T0 + 10)).status_code == 200
        late = event("customer.subscription.updated",
                     p.subscription("sub_1", "cus_1", status="past_due"), created=p.T0)
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: result.update(r=send(base, late)))
        worker.start()
        deadline = time.monotonic() + 10
        while not any(r.startswith("/v1/subscriptions/sub_1") for r in stub.requests):
            assert time.monotonic() < deadline, "the re-fetch never reached Stripe"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
        assert result["r"].status_code == 200 and result["r"].json()["outcome"] == "applied"
        assert proc.wait(timeout=30) in STOPPED
    assert subscription_row(engine, "sub_1")["cancel_at_period_end"] is True
    assert ledger(engine)[late["id"]] == "applied"


def test_two_workers_share_the_load_and_the_metrics(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """--workers 2 serves every event once and /metrics adds up both workers."""
    bodies = [event("customer.subscription.created", p.subscription(f"sub_{n}", f"cus_{n}"),
                    created=p.T0) for n in range(20)]
    with stripe_stub(StripeStub()) as stripe_base, \
            serving(db_url, stripe_base, tmp_path, workers=2) as (base, proc, _):
        with httpx.Client(trust_env=False) as client:
            codes = [client.post(f"{base}{WEBHOOK_PATH}", content=encode(b),
                                 headers={"Stripe-Signature": sign(encode(b))}).status_code
                     for b in bodies]
        assert codes == [200] * 20
        for _ in range(4):  # whichever worker answers, the sum is the same
            metrics = httpx.get(f"{base}/metrics", trust_env=False).text
            assert ('stripe_webhook_events_total{outcome="applied",'
                    'type="customer.subscription.created"} 20.0') in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in STOPPED
    assert len(ledger(engine)) == 20


def test_serve_without_webhook_secret_exits_2_with_a_hint(db_url: str) -> None:
    """Missing STRIPE_WEBHOOK_SECRET is a configuration error (exit code 2), not a crash."""
    runner = CliRunner()
    with runner.isolated_filesystem():
        result = runner.invoke(main, ["serve"], env={
            "DATABASE_URL": db_url, "STRIPE_API_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": "",
        })
    assert result.exit_code == 2
    assert "STRIPE_WEBHOOK_SECRET" in result.output


@pytest.mark.parametrize("args", [["--port", "0"], ["--workers", "0"]])
def test_serve_rejects_bad_options(args: list[str]) -> None:
    """Out-of-range --port or --workers is a usage error."""
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2
