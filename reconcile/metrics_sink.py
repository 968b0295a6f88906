"""Where batch metrics go: a Pushgateway, node_exporter's textfile, or both.

Split from `reconcile.metrics` (what the figures are) to keep transport apart. Both sinks
take a registry without a `command` label: the Pushgateway adds it from the grouping key,
the textfile writer adds it while merging (one file holds every command's series, so a
`notify` run every minute does not erase what the hourly `run` wrote).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog
from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler, write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from config.secret import mask_url_password
from reconcile.logging import redact_text

log = structlog.get_logger("reconcile.metrics")

JOB = "stripe_reconcile"
PUSH_TIMEOUT_S = 10.0
Handler = Callable[..., Callable[[], None]]


def publish(
    registry: CollectorRegistry, command: str, *, succeeded: bool,
    pushgateway_url: str | None, textfile: Path | None, timeout: float = PUSH_TIMEOUT_S,
) -> None:
    """Send to each configured sink; a failing sink is logged, never raised to the job.

    A success replaces the command's series; a failure adds to them (keeping the last
    success time and the last good run's counts).
    """
    if pushgateway_url:
        try:
            push_registry(pushgateway_url, registry, command, replace=succeeded, timeout=timeout)
        except Exception as exc:
            log.warning("metrics.push_failed", command=command,
                        pushgateway=mask_url_password(pushgateway_url),
                        error=redact_text(f"{type(exc).__name__}: {exc}"))
    if textfile is not None:
        try:
            merge_textfile(textfile, registry, command, replace=succeeded)
        except (OSError, ValueError) as exc:
            log.warning("metrics.textfile_failed", command=command, path=str(textfile),
                        error=f"{type(exc).__name__}: {exc}")


def push_registry(
    url: str, registry: CollectorRegistry, command: str, *, replace: bool, timeout: float
) -> None:
    """PUT (replace the group) or POST (replace same-named series) to the Pushgateway."""
    parts = urlsplit(url)
    handler: Handler = default_handler
    if parts.username is not None or parts.password is not None:
        # urllib cannot send credentials embedded in a URL; send them as basic auth instead.
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))

        def handler(url: str, method: str, timeout: float | None,
                    headers: list[tuple[str, str]], data: bytes) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    send = push_to_gateway if replace else pushadd_to_gateway
    send(url.rstrip("/"), job=JOB, registry=registry, grouping_key={"command": command},
         timeout=timeout, handler=handler)


class _Families(Collector):
    """A collector that yields fixed metric families (the merged file)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_families(old_text: str, registry: CollectorRegistry, command: str, *, replace: bool
                   ) -> list[Metric]:
    """The file's families with `command`'s series swapped for the registry's."""
    new = {family.name: family for family in registry.collect()}
    merged: dict[str, Metric] = {}

    def family(like: Any) -> Metric:
        return merged.setdefault(like.name, Metric(like.name, like.documentation, like.type))

    try:
        old = list(text_string_to_metric_families(old_text))
    except ValueError:
        log.warning("metrics.textfile_unreadable", command=command)  # rewritten whole below
        old = []
    for fam in old:
        for s in fam.samples:
            if s.labels.get("command") == command and (replace or fam.name in new):
                continue
            family(fam).add_sample(s.name, s.labels, s.value)
    for fam in new.values():
        for s in fam.samples:
            family(fam).add_sample(s.name, {**s.labels, "command": command}, s.value)
    return [m for m in merged.values() if m.samples]


def merge_textfile(path: Path, registry: CollectorRegistry, command: str, *, replace: bool
                   ) -> None:
    """Rewrite the textfile atomically, under a lock so concurrent commands do not race."""
    lock_path = path.with_name(path.name + ".lock")  # not *.prom: node_exporter ignores it
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old_text = path.read_text() if path.exists() else ""
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Families(merge_families(old_text, registry, command, replace=replace)))
        write_to_textfile(str(path), merged)  # temp file + rename: readers never see half
