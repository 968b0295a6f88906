"""The built-in scheduler: cron semantics, one instance per job, the database lock, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from sqlalchemy import create_engine
from structlog.testing import capture_logs

from cli.schedule import plan_jobs
from config import load_settings
from reconcile.errors import ConfigError
from reconcile.scheduler import (
    ScheduledJob,
    build_scheduler,
    crontab_trigger,
    run_until_stopped,
)

ROOT = Path(__file__).resolve().parents[1]
FRIDAY_8PM = datetime(2026, 12, 4, 20, 0, 30, tzinfo=UTC)


class Tracker:
    """Counts runs of a job and the most runs ever in progress at once."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail
        self.runs = self.active = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.runs += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        if self.fail:
            raise RuntimeError("job failed")


def _every(seconds: float) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, timezone=UTC)


def _wait_for(done: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def _fires(expr: str, count: int = 3) -> list[str]:
    trigger, previous, now, found = crontab_trigger(expr), None, FRIDAY_8PM, []
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        found.append(previous.strftime("%a %H:%M"))
        now = previous + timedelta(seconds=1)
    return found


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 * * * *", ["Fri 21:00", "Fri 22:00", "Fri 23:00"]),
        ("0 9 * * 1-5", ["Mon 09:00", "Tue 09:00", "Wed 09:00"]),
        ("0 0 * * 0", ["Sun 00:00", "Sun 00:00", "Sun 00:00"]),
        ("0 0 * * 7", ["Sun 00:00", "Sun 00:00", "Sun 00:00"]),
        ("0 0 * * */2", ["Sat 00:00", "Sun 00:00", "Tue 00:00"]),
        ("0 0 1 * 1", ["Mon 00:00", "Mon 00:00", "Mon 00:00"]),
    ],
)
def test_cron_expressions_keep_cron_semantics(expr: str, expected: list[str]) -> None:
    """Weekday 0/7 is Sunday, and day-of-month OR day-of-week, as cron means them."""
    assert _fires(expr) == expected


def test_each_job_runs_never_twice_at_once_and_survives_failures() -> None:
    """Short intervals: every job runs, a slow one never overlaps itself, failures go on."""
    fast, slow, failing = Tracker(), Tracker(0.25), Tracker(fail=True)
    jobs = [ScheduledJob(name, _every(0.05), tracker, 1)
            for name, tracker in (("fast", fast), ("slow", slow), ("failing", failing))]
    sched = build_scheduler(jobs, lock_engine=None, scheduler=BackgroundScheduler(timezone=UTC))
    with capture_logs() as logs:
        sched.start()
        _wait_for(lambda: slow.runs >= 3 and failing.runs >= 2 and fast.runs >= 3)
        sched.shutdown(wait=True)
    assert fast.runs >= 3 and failing.runs >= 2 and slow.runs >= 3
    assert slow.peak == 1
    assert any(e["event"] == "schedule.job_failed" and e["job"] == "failing" for e in logs)


def test_two_schedulers_never_run_the_same_job_together(db_url: str) -> None:
    """Two schedulers (two hosts) on one database: the job lock makes the second skip."""
    job = Tracker(0.2)
    engines = [create_engine(db_url), create_engine(db_url)]
    scheds = [build_scheduler([ScheduledJob("reconcile", _every(0.05), job, 1)], lock_engine=e,
                              scheduler=BackgroundScheduler(timezone=UTC)) for e in engines]
    with capture_logs() as logs:
        for sched in scheds:
            sched.start()
        _wait_for(lambda: job.runs >= 3)
        for sched in scheds:
            sched.shutdown(wait=True)
    for engine in engines:
        engine.dispose()
    assert job.runs >= 3 and job.peak == 1
    assert any(e["event"] == "schedule.job_skipped" and e["reason"] == "locked" for e in logs)


SCRIPT = """
import sys, time
from apscheduler.triggers.interval import IntervalTrigger
from reconcile.scheduler import ScheduledJob, build_scheduler, run_until_stopped

out = open(sys.argv[1], "a", buffering=1)
def job():
    out.write("start\\n"); time.sleep(0.4); out.write("end\\n")
job_list = [ScheduledJob("slow", IntervalTrigger(seconds=0.1), job, 5)]
run_until_stopped(build_scheduler(job_list, lock_engine=None))
out.write("exited\\n")
"""


def test_sigterm_stops_after_the_running_job(tmp_path: Path) -> None:
    """SIGTERM mid-job: the job finishes, no new one starts, the process exits 0."""
    trace = tmp_path / "trace.txt"
    trace.touch()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(trace)], cwd=ROOT)
    try:
        _wait_for(lambda: "start" in trace.read_text(), timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    lines = trace.read_text().split()
    assert lines[-2:] == ["end", "exited"]
    assert lines.count("start") == lines.count("end") >= 1


def test_signal_just_before_start_still_stops_it() -> None:
    """A SIGTERM in the moment before the scheduler runs is not lost: it stops at once."""
    sched = build_scheduler([ScheduledJob("hourly", crontab_trigger("0 * * * *"), Tracker(), 5)],
                            lock_engine=None)
    original_start = sched.start

    def signal_then_start() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        original_start()

    sched.start = signal_then_start
    previous = signal.getsignal(signal.SIGUSR1)
    started = time.monotonic()
    try:
        run_until_stopped(sched, signals=(signal.SIGUSR1,))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert time.monotonic() - started < 5


def test_plan_follows_the_settings() -> None:
    """Reconcile always; the drain with EMAIL_FROM; retries only with RETRY_POLICY=custom."""
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    base = {"DATABASE_URL": "postgresql://x@127.0.0.1/y", "STRIPE_API_KEY": "sk_test_51abc"}
    plain = plan_jobs(load_settings(base, env_file=None), engine=engine, notifier=None,
                      retries_cron="0 10 * * *")
    assert [j.name for j in plain] == ["reconcile"]
    custom = load_settings({**base, "RETRY_POLICY": "custom", "RETRY_SCHEDULE": "1d"},
                           env_file=None)
    from reconcile.notify_jobs import Notifier

    notifier = Notifier.from_settings(load_settings(
        {**base, "EMAIL_BACKEND": "console", "EMAIL_FROM": "billing@example.com"},
        env_file=None))
    jobs = plan_jobs(custom, engine=engine, notifier=notifier, retries_cron="30 6 * * *")
    assert [(j.name, j.misfire_grace_s) for j in jobs] == [
        ("reconcile", 900), ("notify", 30), ("retry-payments", 3600)]
    bad = load_settings({**base, "SCHEDULE_RECONCILE": "61 * * * *"}, env_file=None)
    with pytest.raises(ConfigError, match="schedule"):
        plan_jobs(bad, engine=engine, notifier=None, retries_cron="0 10 * * *")


def test_schedule_command_starts_and_stops_on_sigterm(db_url: str, tmp_path: Path) -> None:
    """`reconcile schedule` migrates-checks, plans the jobs, logs them, and exits 0 on SIGTERM."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_test_51abc",
           "RETRY_POLICY": "custom", "RETRY_SCHEDULE": "1d", "LOG_FORMAT": "json",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "schedule"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        started = next((line for line in proc.stderr if "schedule.started" in line), "")
        assert '"reconcile"' in started and '"retry-payments"' in started
        assert '"notify"' not in started  # no EMAIL_FROM: nothing to drain
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
