"""Group commit for the webhook receiver: events that arrive together share a transaction.

The apply path is set-based, so a transaction of eight events costs about what one of a
single event does; that is what lets two cores take hundreds of events a second. The writer
takes every event queued while it was busy into its next transaction; an idle receiver thus
writes each event at once and alone, so grouping adds no delay. Each event's ledger row and
effect still commit together (reconcile.ledger). Database work runs in the thread pool: the
engine and the Stripe gateway are synchronous.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.concurrency import run_in_threadpool

from reconcile.events import Prepared
from reconcile.ledger import Processed
from reconcile.webhook_metrics import WebhookMetrics

# One writer per process: every event queued while it writes goes into its next transaction.
# On a CPU-bound machine big groups beat concurrent small ones (measured: four writers per
# process spent ~3x the CPU per event). Re-fetches from Stripe never run in the writer:
# such events go to settlers of their own, so a slow Stripe holds up only them.
MAX_GROUP = 64
SETTLERS = 4

Work = tuple[Prepared, "asyncio.Future[Processed]"]
Write = Callable[[list[Prepared]], list[Processed | None]]
Settle = Callable[[Prepared], Processed]


def _resolve(future: asyncio.Future[Processed], result: Processed | BaseException) -> None:
    if future.done():  # its request was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class GroupCommit:
    """The writer takes every event queued (up to MAX_GROUP) into one transaction.

    A group that fails is retried event by event, so one event's failure fails only that
    event's request. Events the writer leaves out for a re-fetch are settled one by one.
    """

    def __init__(self, write: Write, settle: Settle, metrics: WebhookMetrics) -> None:
        self._write_group = write
        self._settle_one = settle
        self._metrics = metrics
        self._queue: asyncio.Queue[Work] | None = None
        self._settling: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the writer for the lifespan of the app."""
        queue: asyncio.Queue[Work] = asyncio.Queue()
        writer = asyncio.create_task(self._write(queue))
        # Made here, not in __init__: asyncio primitives belong to the loop that runs them.
        self._queue, self._settling = queue, asyncio.Semaphore(SETTLERS)
        try:
            yield
        finally:
            self._queue = None
            for task in [writer, *self._tasks]:
                task.cancel()
            await asyncio.gather(writer, *self._tasks, return_exceptions=True)

    async def submit(self, item: Prepared) -> Processed:
        """Queue one event; returns once its transaction committed (or raises)."""
        if self._queue is None:
            raise RuntimeError("the receiver is not running (its lifespan has not started)")
        future: asyncio.Future[Processed] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _write(self, queue: asyncio.Queue[Work]) -> None:
        while True:
            group = [await queue.get()]
            while len(group) < MAX_GROUP and not queue.empty():
                group.append(queue.get_nowait())
            try:
                await self._commit(group)
            except Exception as exc:  # a bug here must fail requests, not stop the writer
                for _, future in group:
                    _resolve(future, exc)

    async def _commit(self, group: list[Work]) -> None:
        self._metrics.batch_size.observe(len(group))
        results: list[Processed | Exception | None]
        try:
            results = [*await run_in_threadpool(self._write_group, [w[0] for w in group])]
        except Exception as exc:
            if len(group) > 1:
                for work in group:
                    await self._commit([work])
                return
            results = [exc]
        for (item, future), result in zip(group, results, strict=True):
            if result is None:
                task = asyncio.create_task(self._settle(item, future))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                _resolve(future, result)

    async def _settle(self, item: Prepared, future: asyncio.Future[Processed]) -> None:
        assert self._settling is not None
        async with self._settling:
            try:
                _resolve(future, await run_in_threadpool(self._settle_one, item))
            except Exception as exc:
                _resolve(future, exc)
