"""Drift reports: a readable text table (fits 100 columns) and a stable JSON document."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from reconcile.engine import RunResult

JSON_SCHEMA_VERSION = 1
WIDTH = 100
TEXT_ROWS = 50


def as_json_document(result: RunResult) -> dict[str, Any]:
    """The documented JSON report (README: "JSON report"); keys are a stable contract."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "run_id": result.run_id,
        "dry_run": result.dry_run,
        "outcome": result.outcome,
        "summary": dict(sorted(result.counts.items())),
        "drift_total": result.drift_total,
        "drift_truncated": result.drift_total > len(result.drift),
        "changed_rows": result.changed_rows,
        "rows_written": result.applied.total,
        "objects_listed": result.objects_listed,
        "stripe_requests": result.stripe_requests,
        "duration_s": result.duration_s,
        "timings": result.timings,
        "drift": [asdict(d) for d in result.drift],
    }


def render_json(result: RunResult) -> str:
    """One JSON document, newline-terminated."""
    return json.dumps(as_json_document(result), sort_keys=False) + "\n"


def _cut(value: str | None, width: int) -> str:
    shown = "∅" if value is None else value
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def render_text(result: RunResult, *, max_rows: int = TEXT_ROWS) -> str:
    """Summary counts per drift kind, then a table capped at `max_rows` lines."""
    mode = "dry run" if result.dry_run else "run"
    verb = "would change" if result.dry_run else "changed"
    lines = [
        f"Reconciliation {mode} #{result.run_id}: {result.outcome} — "
        f"{result.drift_total} drift entries, {result.changed_rows} rows {verb} "
        f"({result.objects_listed} objects, {result.stripe_requests} Stripe requests, "
        f"{result.duration_s:.1f}s)",
    ]
    if not result.counts:
        lines.append("No drift: the database matches Stripe.")
        return "\n".join(lines) + "\n"
    lines.append("")
    lines.extend(f"  {kind:<24} {n:>8}" for kind, n in sorted(result.counts.items()))
    lines.append("")
    header = f"{'OBJECT':<12} {'STRIPE ID':<28} {'FIELD':<20} {'LOCAL -> STRIPE':<22} ACTION"
    lines.append(header)
    lines.append("-" * min(WIDTH, len(header) + 6))
    for d in result.drift[:max_rows]:
        change = f"{_cut(d.local, 10)} -> {_cut(d.stripe, 10)}"
        lines.append(
            f"{_cut(d.object, 12):<12} {_cut(d.stripe_id, 28):<28} "
            f"{_cut(d.field or '(row)', 20):<20} {change:<22} {_cut(d.action, 13)}"
        )
    hidden = result.drift_total - min(len(result.drift), max_rows)
    if hidden > 0:
        lines.append(f"… and {hidden} more (use --format json for the full list)")
    return "\n".join(lines) + "\n"
