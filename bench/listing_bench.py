"""Rate-limited listing: parallel `created` windows under one throttle versus the floor.

    python -m bench.listing_bench --subs 100000 --latency 0.3 --rate 25 --concurrency 10

The emulator (its own process) answers every page after `latency` seconds and allows `rate`
requests per second per endpoint (429 beyond). One cursor is latency-bound: pages x latency.
The floor is pages / rate. The parallel listing must land near the floor and return exactly
the subscriptions a sequential listing returns (checked against a second emulator seeded
identically but without faults, listed sequentially).
"""

from __future__ import annotations

import argparse
import math
import time

from bench.support import emulator, machine
from reconcile.listing import Throttle
from reconcile.stripe_api import StripeGateway, make_client


def _list(url: str, key: str, *, concurrency: int) -> tuple[list[str], float, int, int]:
    gateway = StripeGateway(
        make_client(key, url, 0), api_key_livemode=False, concurrency=concurrency,
        throttle=Throttle(), max_attempts=30, backoff_base=0.2, backoff_cap=2.0,
    )
    started = time.perf_counter()
    ids = [o["id"] for page in gateway.list_subscriptions() for o in page.objects]
    return ids, time.perf_counter() - started, gateway.stats.requests, gateway.stats.rate_limited


def main() -> None:
    """Measure and print one Markdown row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--sample-pages", type=int, default=20,
                        help="pages of the sequential listing to time under the faults")
    args = parser.parse_args()
    pages = math.ceil(args.subs / 100)
    floor = pages / args.rate
    print(f"Machine: {machine()}\n")
    with emulator(args.subs) as plain:
        reference, ref_s, _, _ = _list(plain.url, plain.api_key, concurrency=1)
    with emulator(args.subs, latency=args.latency, rate=args.rate) as slow:
        # The sequential way, timed on a sample (the whole would take pages x latency).
        gateway = StripeGateway(make_client(slow.api_key, slow.url, 0), api_key_livemode=False)
        started = time.perf_counter()
        for n, _page in enumerate(gateway.list_subscriptions(), start=1):
            if n >= args.sample_pages:
                break
        per_page = (time.perf_counter() - started) / args.sample_pages
        ids, seconds, requests, limited = _list(slow.url, slow.api_key,
                                                concurrency=args.concurrency)
    identical = sorted(ids) == sorted(reference) and len(ids) == len(set(ids))
    print("| subs | latency | limit | sequential (est.) | floor | parallel | vs floor | "
          "requests | 429s | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.subs:,} | {args.latency * 1000:.0f} ms | {args.rate:.0f}/s | "
          f"{per_page * pages:.0f} s ({per_page * 1000:.0f} ms/page) | {floor:.0f} s | "
          f"{seconds:.1f} s (concurrency {args.concurrency}) | {seconds / floor:.2f}x | "
          f"{requests} | {limited} | {'yes' if identical else 'NO'} |")
    print(f"\n(reference sequential listing without faults: {len(reference):,} in {ref_s:.1f} s)")


if __name__ == "__main__":
    main()
