"""`reconcile_runs`: one row per run, written outside the run's own transaction.

The row is opened before the work starts and closed after it, in short transactions of
their own, so a run that fails and rolls back still leaves its record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import Engine, text


def start_run(engine: Engine, *, dry_run: bool) -> int:
    """Open a run record; returns its id."""
    with engine.begin() as conn:
        run_id = conn.execute(
            text("INSERT INTO reconcile_runs (dry_run) VALUES (:d) RETURNING id"), {"d": dry_run}
        ).scalar_one()
    return int(run_id)


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    outcome: str,
    counts: Mapping[str, int] | None = None,
    changes_applied: int = 0,
    objects_listed: int = 0,
    stripe_requests: int = 0,
    error: str | None = None,
) -> None:
    """Close a run record with its outcome and figures."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE reconcile_runs SET finished_at = now(), outcome = :o, "
                "counts = CAST(:c AS jsonb), changes_applied = :a, objects_listed = :n, "
                "stripe_requests = :r, error = :e WHERE id = :id"
            ),
            {
                "o": outcome,
                "c": json.dumps(dict(counts or {})),
                "a": changes_applied,
                "n": objects_listed,
                "r": stripe_requests,
                "e": error,
                "id": run_id,
            },
        )
