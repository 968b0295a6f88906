"""Shared bench plumbing: an emulator in its own process, an embedded PostgreSQL, timing.

The emulator runs in a separate process so that its memory (it holds the whole seeded
account) never counts towards the peak RSS we report for `reconcile`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECONCILE = [sys.executable, "-m", "cli"]

_SERVE = """
import json, sys
from reconcile.emulator import StripeEmulator
args = json.loads(sys.argv[1])
emu = StripeEmulator()
emu.seed(args["n"], rng_seed=args.get("rng_seed", 7), emit_events=False)
with emu:
    if args.get("latency"):
        emu.faults.add_latency(args["latency"], path_prefix="/v1/")
    if args.get("rate"):
        for prefix in ("/v1/subscriptions", "/v1/invoices"):
            emu.faults.rate_limit(args["rate"], path_prefix=prefix)
    print(json.dumps({"url": emu.url, "api_key": emu.api_key}), flush=True)
    sys.stdin.read()  # serve until the bench closes our stdin
"""


@dataclass(frozen=True)
class Emulator:
    """A running emulator process."""

    url: str
    api_key: str


@contextmanager
def emulator(n: int, *, latency: float = 0.0, rate: float = 0.0) -> Iterator[Emulator]:
    """Seed `n` subscriptions in a child process and serve them on 127.0.0.1."""
    args = json.dumps({"n": n, "latency": latency, "rate": rate})
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        info = json.loads(proc.stdout.readline())
        yield Emulator(info["url"], info["api_key"])
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Timed:
    """A child command's wall time, peak RSS and its stdout."""

    seconds: float
    peak_rss_mb: float
    stdout: str
    returncode: int


_MEASURE = """
import resource, subprocess, sys, time, json
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
"""


def timed(argv: Sequence[str], env: dict[str, str]) -> Timed:
    """Run a command in a fresh wrapper so its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, env=env,
        cwd=ROOT, check=True,
    )
    data = json.loads(out.stdout)
    if data["rc"] not in (0, 3):
        raise RuntimeError(f"{' '.join(argv)} failed ({data['rc']}): {data['stderr'][-2000:]}")
    return Timed(data["seconds"], data["rss_kb"] / 1024, data["stdout"], data["rc"])


def machine() -> str:
    """One line describing this machine, for RESULTS.md."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def self_peak_rss_mb() -> float:
    """This process's own peak RSS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
