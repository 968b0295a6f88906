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


_SHORT_OBJECT = {"subscription": "sub", "invoice": "inv", "user": "user"}


def _shown(value: str | None) -> str:
    """A value for the table: ISO times shortened to minutes, None as ∅."""
    if value is None:
        return "∅"
    if len(value) == 20 and value[10] == "T" and value.endswith("Z"):
        return f"{value[:10]} {value[11:16]}"  # 2026-05-28T20:26:40Z -> 2026-05-28 20:26
    return value


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def render_text(result: RunResult, *, max_rows: int = TEXT_ROWS) -> str:
    """Summary counts per drift kind, then a table (at most 100 columns) of `max_rows` lines."""
    mode = "dry run" if result.dry_run else "run"
    verb = "would change" if result.dry_run else "changed"
    lines = [
        f"Reconciliation {mode} #{result.run_id}: {result.outcome}, "
        f"{result.changed_rows} rows {verb} ({result.drift_total} drift entries)",
        f"  {result.objects_listed} objects listed with {result.stripe_requests} Stripe "
        f"requests in {result.duration_s:.1f}s",
    ]
    if not result.counts:
        lines.append("No drift: the database matches Stripe.")
        return "\n".join(lines) + "\n"
    lines.append("")
    lines.extend(f"  {kind:<24} {n:>8}" for kind, n in sorted(result.counts.items()))
    lines.append("")
    row = "{:<4} {:<28} {:<20} {:<16} {:<16} {}"
    lines.append(row.format("OBJ", "STRIPE ID", "FIELD", "LOCAL", "STRIPE", "ACTION"))
    lines.append("-" * WIDTH)
    for d in result.drift[:max_rows]:
        lines.append(row.format(
            _SHORT_OBJECT.get(d.object, d.object[:4]), _cut(d.stripe_id, 28),
            _cut(d.field or "(row)", 20), _cut(_shown(d.local), 16),
            _cut(_shown(d.stripe), 16), _cut(d.action, 9),
        ))
    hidden = result.drift_total - min(len(result.drift), max_rows)
    if hidden > 0:
        lines.append(f"… and {hidden} more (use --format json for the full list)")
    return "\n".join(lines) + "\n"
