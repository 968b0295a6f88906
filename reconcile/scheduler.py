"""`reconcile schedule`: one long-running process that runs the jobs on their own clock.

For hosts without cron or Kubernetes CronJobs (those stay the recommended way). Built on
APScheduler 3's BlockingScheduler; the jobs themselves are arguments (`ScheduledJob`), so
this module knows nothing about reconciling, e-mail or payments.

- One instance of each job at a time (`max_instances=1`); runs missed while the process was
  busy or asleep are coalesced into one, if still within the job's misfire grace time.
- Each run first takes a PostgreSQL session advisory lock named after the job, without
  waiting, so two schedulers on two hosts never run the same job at once: the loser skips.
- SIGTERM or SIGINT: no new runs start; the running ones finish; then the process exits.

APScheduler 3 ships no type information, hence the `type: ignore`s: its objects are Any.
"""

from __future__ import annotations

import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from types import FrameType

import structlog
from apscheduler.events import EVENT_SCHEDULER_START  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.base import (  # type: ignore[import-untyped]
    STATE_RUNNING,
    BaseScheduler,
)
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from sqlalchemy import Engine, text

from reconcile.errors import LockHeldError

log = structlog.get_logger("reconcile.scheduler")

# Distinct from the run lock (…0001) and the retry lock (…0002); one key per job name.
_JOB_LOCK_BASE = 0x5EC0_C11E_0000_0000 | (1 << 32)


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token) % 7  # cron: 0 and 7 are Sunday
    if token[:3].lower() in _WEEKDAYS:
        return _WEEKDAYS.index(token[:3].lower())
    raise ValueError(f"invalid day of week {token!r}")


def _weekdays(field: str) -> str:
    """A cron day-of-week field as APScheduler day names (it numbers Monday as 0)."""
    days: set[int] = set()
    for item in field.split(","):
        base, _, step = item.partition("/")
        if base in ("*", "?"):
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _weekday(first), _weekday(last) or 7  # "5-7" / "fri-sun" end Sunday
        else:
            low = _weekday(base)
            high = 6 if step else low  # "1/2" means from Monday, every other day
        days.update(d % 7 for d in range(low, high + 1, int(step) if step else 1))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def crontab_trigger(expr: str) -> BaseTrigger:
    """A trigger with standard cron semantics, in UTC (raises ValueError when invalid).

    APScheduler 3's own `from_crontab` numbers weekdays from Monday and requires both the
    day of month and the day of week to match; cron numbers from Sunday and runs when
    either matches (if both are restricted).
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 cron fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    unrestricted = ("*", "?")

    def cron(day_: str, weekday_: str) -> BaseTrigger:
        names = "*" if weekday_ in unrestricted else _weekdays(weekday_)
        return CronTrigger(minute=minute, hour=hour, day=day_, month=month,
                           day_of_week=names, timezone=UTC)

    if day not in unrestricted and weekday not in unrestricted:
        return OrTrigger([cron(day, "*"), cron("*", weekday)])
    return cron("*" if day == "?" else day, weekday)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """A job: its name (also its lock), when it runs, what it runs, how late it may start."""

    name: str
    trigger: BaseTrigger
    run: Callable[[], object]
    misfire_grace_s: int


def job_lock_key(name: str) -> int:
    """The advisory lock key of a job; stable across hosts and releases."""
    return _JOB_LOCK_BASE + zlib.crc32(name.encode())


@contextmanager
def _job_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Hold the job's session lock for the block if free; yields whether it was taken."""
    key = job_lock_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def guarded(job: ScheduledJob, lock_engine: Engine | None) -> Callable[[], None]:
    """The job as the scheduler runs it: under its database lock, never raising.

    A failed run is logged and the schedule goes on (the next tick tries again); the job
    itself publishes its metrics.
    """

    def run() -> None:
        started = time.monotonic()
        try:
            if lock_engine is None:
                job.run()
            else:
                with _job_lock(lock_engine, job.name) as got:
                    if not got:
                        log.info("schedule.job_skipped", job=job.name, reason="locked")
                        return
                    job.run()
        except LockHeldError as exc:  # the job's own lock: a manual run is going on
            log.info("schedule.job_skipped", job=job.name, reason="locked", error=exc.message)
            return
        except Exception as exc:
            log.error("schedule.job_failed", job=job.name, error=f"{type(exc).__name__}: {exc}",
                      duration_s=round(time.monotonic() - started, 3))
            return
        log.info("schedule.job_finished", job=job.name,
                 duration_s=round(time.monotonic() - started, 3))

    return run


def build_scheduler(
    jobs: Sequence[ScheduledJob], *, lock_engine: Engine | None,
    scheduler: BaseScheduler | None = None,
) -> BaseScheduler:
    """A scheduler (blocking by default) with every job added under its rules."""
    sched = scheduler if scheduler is not None else BlockingScheduler(timezone=UTC)
    # One thread per job: a long reconciliation never delays the minutely drain.
    sched.add_executor(ThreadPoolExecutor(max_workers=max(len(jobs), 1)), alias="jobs")
    for job in jobs:
        sched.add_job(
            guarded(job, lock_engine), trigger=job.trigger, id=job.name, name=job.name,
            executor="jobs", max_instances=1, coalesce=True,
            misfire_grace_time=job.misfire_grace_s, replace_existing=True,
        )
    return sched


def run_until_stopped(
    sched: BaseScheduler, *, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Start `sched` (blocking) and return once a signal stopped it and its jobs finished."""
    started, requested = threading.Event(), threading.Event()
    received: list[int] = []
    jobs = {job.id: str(job.trigger) for job in sched.get_jobs()}

    def on_start(event: object) -> None:
        started.set()
        log.info("schedule.started", jobs=jobs)

    def stop(signum: int, frame: FrameType | None) -> None:
        # No I/O, no logging here: the handler may interrupt the main thread in the middle of
        # a write to the same stream (a reentrant write raises and would lose the signal).
        received.append(signum)
        requested.set()

    def watch() -> None:
        requested.wait()
        started.wait()  # a signal may arrive before start() got going; stop right after
        log.info("schedule.stopping", signal=signal.Signals(received[0]).name)
        if sched.state == STATE_RUNNING:
            sched.pause()  # the main loop submits nothing more
        sched.shutdown(wait=True)  # waits for the running jobs, then wakes the main loop

    watcher = threading.Thread(target=watch, name="scheduler-stop", daemon=True)
    watcher.start()
    sched.add_listener(on_start, EVENT_SCHEDULER_START)
    for signum in signals:
        signal.signal(signum, stop)
    sched.start()
    # start() returns as soon as the state says stopped; the jobs may still be running.
    watcher.join()
    log.info("schedule.stopped")
