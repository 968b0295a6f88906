"""Text and JSON drift reports.  [pure, no I/O]"""

from __future__ import annotations

import json

from reconcile.apply import Applied
from reconcile.diff import Drift
from reconcile.engine import RunResult
from reconcile.report import render_json, render_text


def result(n: int) -> RunResult:
    periods = [
        Drift("current_period_end", "subscription", f"sub_1Pgc6rB7WZ01zgkWNy0C{i:04}",
              "current_period_end", "2026-05-28T20:26:40Z", "2026-06-28T20:26:40Z", "update")
        for i in range(n)
    ]
    gone = Drift("missing_in_stripe", "subscription", "sub_gone", "status", "active", None,
                 "cancel")
    drift = (*periods, gone)
    return RunResult(
        run_id=7, dry_run=True, outcome="drift", counts={"current_period_end": n,
                                                         "missing_in_stripe": 1},
        drift=drift, drift_total=n + 1 + 5, changed_rows=n + 1, applied=Applied(),
        objects_listed=123_456, stripe_requests=1_240, rate_limited=0, duration_s=12.5,
        timings={"listing_s": 11.0, "database_s": 1.5},
    )


def test_text_report_fits_100_columns_and_shows_times_to_the_minute() -> None:
    """Every line fits 100 columns; ISO times read as 'YYYY-MM-DD HH:MM'."""
    text = render_text(result(3))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "2026-05-28 20:26" in text and "2026-06-28 20:26" in text
    assert "sub_1Pgc6rB7WZ01zgkWNy0C0002" in text  # full 28-character ids
    assert "∅" in text  # None shown as the empty-set sign


def test_text_report_caps_long_lists_with_a_count() -> None:
    """Past max_rows the table ends with how many entries were left out."""
    text = render_text(result(80), max_rows=50)
    assert "… and 36 more" in text
    assert text.count("current_period_end ") >= 50


def test_json_report_has_the_documented_keys() -> None:
    """The JSON document keeps the documented, stable keys and marks truncation."""
    doc = json.loads(render_json(result(2)))
    assert list(doc)[:4] == ["schema_version", "run_id", "dry_run", "outcome"]
    assert doc["summary"] == {"current_period_end": 2, "missing_in_stripe": 1}
    assert doc["drift_truncated"] is True and doc["drift_total"] == 8
    assert doc["drift"][-1] == {"kind": "missing_in_stripe", "object": "subscription",
                                "stripe_id": "sub_gone", "field": "status", "local": "active",
                                "stripe": None, "action": "cancel"}
    assert doc["timings"] == {"listing_s": 11.0, "database_s": 1.5}
