"""Run the emulator standalone (demo) or measure list throughput over raw HTTP.

python -m reconcile.emulator --seed 1000             # serve until Ctrl-C
python -m reconcile.emulator --seed 20000 --measure  # list all subscriptions, report obj/s
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from urllib.parse import urlsplit

from .emulator import StripeEmulator


def measure_list(emu: StripeEmulator, path: str = "/v1/subscriptions") -> tuple[int, int, float]:
    """List everything at `path` (status=all, limit=100) on one keep-alive connection.

    Returns (objects, pages, seconds); the client parses every page, as a reader would.
    """
    url = urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    objects, pages, cursor = 0, 0, ""
    started = time.perf_counter()
    while True:
        conn.request("GET", f"{path}?status=all&limit=100{cursor}", headers=headers)
        body = json.loads(conn.getresponse().read())
        objects, pages = objects + len(body["data"]), pages + 1
        if not body["has_more"]:
            break
        cursor = f"&starting_after={body['data'][-1]['id']}"
    conn.close()
    return objects, pages, time.perf_counter() - started


def main() -> None:
    """Parse arguments, seed, then serve or measure."""
    parser = argparse.ArgumentParser(prog="python -m reconcile.emulator", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="customers to seed (one sub each)")
    parser.add_argument("--rng-seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--legacy", action="store_true", help="emit pre-basil shapes")
    parser.add_argument("--measure", action="store_true", help="time listing, then exit")
    args = parser.parse_args()
    emu = StripeEmulator(port=args.port, legacy_shapes=args.legacy)
    if args.seed:
        report = emu.seed(args.seed, rng_seed=args.rng_seed)
        print(
            f"seeded {report.subscriptions:,} subscriptions and {report.invoices:,} invoices "
            f"in {report.seconds:.2f}s ({report.subscriptions / report.seconds:,.0f} subs/s)"
        )
    with emu:
        if args.measure:
            for label in ("first pass (serialises JSON)", "second pass (cached JSON)"):
                objects, pages, seconds = measure_list(emu)
                print(
                    f"{label}: {objects:,} subscriptions in {pages} pages, {seconds:.2f}s "
                    f"= {objects / seconds:,.0f} objects/s"
                )
            return
        print(f"Stripe emulator at {emu.url}  api_key={emu.api_key}  (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
