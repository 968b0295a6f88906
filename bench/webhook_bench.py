"""Webhook receiver throughput and latency, database writes included, over loopback.

    .venv/bin/python bench/webhook_bench.py [--events 6000] [--concurrency 16] [--workers 1]

Starts its own embedded PostgreSQL and `reconcile serve` on 127.0.0.1, sends signed,
real-shaped events (the fixture subscription lifecycle, ids renamed: every event writes
rows) from a minimal keep-alive HTTP/1.1 client, checks every event landed in the ledger, and
prints one Markdown table row. Bounded: at most --events requests and --max-seconds seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconcile.migrate import upgrade  # noqa: E402 - after the path set-up above
from reconcile.pg_embedded import EmbeddedPostgres  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "events"
SECRET = "whsec_bench_0123456789abcdefghijklmnop"
PATH = "/api/v1/stripe-webhooks"
HEADER = "| events | concurrency | workers | events/s | p50 ms | p99 ms | max ms | errors |"


def lifecycles(count: int) -> list[list[bytes]]:
    """`count` subscription lifecycles of six events each, as body bytes."""
    templates = [p.read_text() for p in sorted(FIXTURES.glob("evt_Seed*.json"))]
    return [
        [json.dumps(json.loads(t.replace("Seed00000", f"B{n}n"))).encode() for t in templates]
        for n in range(count)
    ]


def signed_request(body: bytes, port: int) -> bytes:
    """One complete HTTP/1.1 request, signed now (the run is shorter than the tolerance)."""
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), b"%d." % ts + body, hashlib.sha256).hexdigest()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: t={ts},v1={mac}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    port: int, requests: list[bytes], latencies: list[float], errors: list[int], deadline: float
) -> None:
    """Send `requests` one after another on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status_line.split()[1] != b"200":
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


async def drive(
    port: int, batches: list[list[bytes]], deadline: float
) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(connection(port, b, latencies, errors, deadline) for b in batches))
    return latencies, errors, time.perf_counter() - started


def split(cycles: list[list[bytes]], port: int, concurrency: int) -> list[list[bytes]]:
    """Each connection sends whole lifecycles in order, so no event arrives before its past."""
    batches: list[list[bytes]] = [[] for _ in range(concurrency)]
    for n, cycle in enumerate(cycles):
        batches[n % concurrency].extend(signed_request(b, port) for b in cycle)
    return batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"reconcile serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("reconcile serve did not become ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000, help="measured events (x6 rounded)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--refetch", default="conflicts", choices=["never", "conflicts", "always"])
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args()
    if not 0 < args.max_seconds <= 240:
        raise SystemExit("--max-seconds must be in (0, 240]: signatures expire after 300 s")

    warm_cycles = max(args.concurrency * 4, 40)
    cycles = lifecycles(warm_cycles + max(1, args.events // 6))
    with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory() as workdir:
        upgrade(pg.url)
        engine = sa.create_engine(pg.url)
        with engine.begin() as conn:  # the customers exist, as in a real application
            conn.execute(sa.text(
                "INSERT INTO users (email, stripe_customer_id) SELECT 'u' || n || '@example.com',"
                " 'cus_B' || n || 'n1' FROM generate_series(0, :n) AS n"), {"n": len(cycles)})
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "STRIPE_"))},
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": pg.url,
            "STRIPE_API_KEY": "sk_test_bench0000000000000000",
            # Nothing listens there: in-order delivery must never need a re-fetch.
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "WEBHOOK_REFETCH": args.refetch,
            "LOG_FORMAT": "json",
        }
        log_path = Path(workdir) / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from cli import main; main()", "serve",
                 "--port", str(port), "--workers", str(args.workers)],
                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                wait_healthy(port, proc)
                deadline = time.monotonic() + args.max_seconds
                asyncio.run(drive(port, split(cycles[:warm_cycles], port, args.concurrency),
                                  deadline))
                latencies, errors, elapsed = asyncio.run(
                    drive(port, split(cycles[warm_cycles:], port, args.concurrency), deadline))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        with engine.connect() as conn:
            outcomes: dict[str, int] = dict(conn.execute(sa.text(
                "SELECT outcome, count(*) FROM stripe_events GROUP BY outcome")).all())
        engine.dispose()
    sent = len(latencies)
    if outcomes.get("applied", 0) != sent + warm_cycles * 6 - len(errors):
        print(f"warning: ledger outcomes {outcomes} for {sent} measured events", file=sys.stderr)
    if args.header:
        print(HEADER)
        print("| --- " * 8 + "|")
    print(
        f"| {sent} | {args.concurrency} | {args.workers} | {sent / elapsed:.0f} "
        f"| {percentile(latencies, 0.50) * 1000:.1f} | {percentile(latencies, 0.99) * 1000:.1f} "
        f"| {max(latencies) * 1000:.1f} | {len(errors)} |"
    )


if __name__ == "__main__":
    main()
