"""The webhook receiver: verify -> parse -> ledger + apply (one transaction) -> respond.

Exposes exactly POST /api/v1/stripe-webhooks, GET /healthz, GET /readyz and GET /metrics.
A 2xx means the event is recorded together with its effect (or is a duplicate of one that
is); every failure after verification answers 5xx so that Stripe delivers again.

Events that arrive together are written in one transaction (see reconcile.group_commit).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from config import Settings, load_settings
from reconcile import signature
from reconcile.database import ensure_migrated, make_engine
from reconcile.errors import ReconcileError
from reconcile.events import Event, EventError, parse_event, prepare
from reconcile.group_commit import SETTLERS, GroupCommit
from reconcile.ledger import LedgerOptions, ObjectSource, Processed, process_events, settle
from reconcile.logging import configure_logging, get_logger
from reconcile.snapshot import PayloadError
from reconcile.stripe_api import StripeGateway, make_client
from reconcile.webhook_metrics import WebhookMetrics

WEBHOOK_PATH = "/api/v1/stripe-webhooks"
REQUIRED_SETTINGS = ("database", "stripe", "webhook")
POOL_SIZE = 1 + SETTLERS + 1  # the writer, the settlers, /readyz
# A re-fetch happens inside the request, which Stripe abandons after some seconds; retrying
# for longer than that only delays the 5xx that makes Stripe deliver again.
_REFETCH_BACKOFF_CAP = 2.0

log = get_logger(__name__)


class _Rejected(Exception):
    """A request refused before processing: status, stable reason label, one-line message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class _Receiver:
    """Everything a request needs, fixed when the app is built."""

    engine: Engine
    commits: GroupCommit
    keys: tuple[bytes, ...]
    max_body: int
    metrics: WebhookMetrics

    async def receive(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, self.max_body)
            signature.verify(
                body, request.headers.get("stripe-signature"), self.keys, now=time.time()
            )
            event = parse_event(body)
            item = prepare(event)
        except _Rejected as exc:
            return self._reject(request, exc.status, exc.reason, str(exc))
        except (signature.SignatureError, EventError) as exc:
            return self._reject(request, 400, exc.reason, str(exc))
        except PayloadError as exc:
            return self._reject(request, 400, "malformed_object", str(exc))
        try:
            result = await self.commits.submit(item)
        except Exception as exc:  # every failure must become a logged 5xx
            return self._failed(event, exc, started)
        elapsed = time.perf_counter() - started
        self.metrics.events.labels(event.type, result.outcome).inc()
        self.metrics.latency.observe(elapsed)
        if result.refetched or result.refetch_missing:
            self.metrics.refetches.inc()
        _log_processed(result, event, elapsed)
        return JSONResponse({"received": True, "outcome": result.outcome})

    def _reject(self, request: Request, status: int, reason: str, message: str) -> Response:
        self.metrics.rejections.labels(reason).inc()
        client = request.client.host if request.client else None
        log.warning("webhook.rejected", reason=reason, status=status, detail=message,
                    client=client)
        return PlainTextResponse(f"{message}\n", status_code=status)

    def _failed(self, event: Event, exc: Exception, started: float) -> Response:
        status, message = _failure(exc)
        database = isinstance(exc, SQLAlchemyError)
        if database:
            self.metrics.database_errors.inc()
        self.metrics.events.labels(event.type, "failed").inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        log.error(
            "webhook.event_failed", event_id=event.id, type=event.type, status=status,
            error_type=type(exc).__name__, error=_one_line(str(exc)),
            # An outage is explained by its message; anything else needs the traceback.
            exc_info=not (database or isinstance(exc, ReconcileError)),
        )
        return PlainTextResponse(f"{message}; Stripe will retry\n", status_code=status)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            await run_in_threadpool(ensure_migrated, self.engine)
        except (ReconcileError, SQLAlchemyError) as exc:
            reason = exc.message if isinstance(exc, ReconcileError) else type(exc).__name__
            return PlainTextResponse(f"not ready: {_one_line(reason)}\n", status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        content, media_type = self.metrics.render()
        return Response(content, media_type=media_type)


def _failure(exc: Exception) -> tuple[int, str]:
    """The status and the one line a caller gets for an event that could not be applied."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return 503, "database unavailable"
    if isinstance(exc, DBAPIError):
        return 500, "database error"
    if isinstance(exc, ReconcileError):
        return exc.http_status, _one_line(exc.message)
    return 500, "internal error"


def _one_line(message: str, limit: int = 300) -> str:
    return " ".join(message.split())[:limit]


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _Rejected(400, "malformed_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise _Rejected(413, "too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked bodies announce no length
            raise _Rejected(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _log_processed(result: Processed, event: Event, elapsed: float) -> None:
    """The one summary line of a processed webhook."""
    log.info(
        f"webhook.event_{result.outcome}",
        event_id=event.id, type=event.type, object_id=event.object_id,
        created=int(event.created.timestamp()), refetched=result.refetched,
        refetch_missing=result.refetch_missing, reason=result.reason,
        fields=list(result.fields), duration_ms=round(elapsed * 1000, 2),
    )


def create_app(
    settings: Settings,
    engine: Engine,
    gateway: ObjectSource | None,
    registry: CollectorRegistry | None = None,
    *,
    metrics_dir: Path | None = None,
    dispose_engine: bool = False,
) -> Starlette:
    """The receiver app. `gateway` may be None only with WEBHOOK_REFETCH=never.

    `metrics_dir` is a prometheus multiprocess directory to aggregate on /metrics;
    `dispose_engine` closes the engine's pool at shutdown (when the app owns it).
    """
    if not settings.stripe_webhook_secret:
        raise ValueError("the webhook receiver needs STRIPE_WEBHOOK_SECRET")
    if gateway is None and settings.webhook_refetch != "never":
        raise ValueError(f"WEBHOOK_REFETCH={settings.webhook_refetch} needs a Stripe gateway")
    options = LedgerOptions(
        refetch=settings.webhook_refetch, livemode=settings.stripe_livemode,
        notify_max_age=timedelta(hours=settings.notify_max_age_hours),
    )
    metrics = WebhookMetrics.create(registry, multiprocess_dir=metrics_dir)
    receiver = _Receiver(
        engine=engine,
        commits=GroupCommit(
            functools.partial(process_events, engine, options=options),
            functools.partial(settle, engine, options=options, gateway=gateway),
            metrics,
        ),
        keys=tuple(s.reveal().encode() for s in settings.stripe_webhook_secret),
        max_body=settings.webhook_max_body_bytes,
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(ensure_migrated, engine)
        except (ReconcileError, SQLAlchemyError) as exc:
            # Keep serving: requests answer 503 until the database is back, and /readyz says why.
            log.warning("webhook.database_not_ready", error=_one_line(str(exc)))
        log.info("webhook.started", path=WEBHOOK_PATH, refetch=settings.webhook_refetch,
                 secrets=len(receiver.keys), livemode=settings.stripe_livemode)
        async with receiver.commits.running():
            yield
        if dispose_engine:
            engine.dispose()
        log.info("webhook.stopped")

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
            Route("/readyz", receiver.readyz, methods=["GET"]),
            Route("/metrics", receiver.metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def make_webhook_gateway(settings: Settings) -> StripeGateway:
    """A gateway whose retries fit inside a webhook request."""
    assert settings.stripe_api_key is not None
    client = make_client(
        settings.stripe_api_key.reveal(), settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    return StripeGateway(
        client, api_key_livemode=settings.stripe_livemode,
        max_attempts=settings.stripe_max_network_retries + 1,
        backoff_cap=_REFETCH_BACKOFF_CAP,
    )


def app_from_settings(settings: Settings, *, metrics_dir: Path | None = None) -> Starlette:
    """The app with its own engine and gateway, as `reconcile serve` runs it."""
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=POOL_SIZE)
    return create_app(
        settings, engine, make_webhook_gateway(settings),
        metrics_dir=metrics_dir, dispose_engine=True,
    )


def app_from_env() -> Starlette:
    """uvicorn factory for `reconcile serve --workers N`: each worker process builds its own."""
    settings = load_settings(require=REQUIRED_SETTINGS)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return app_from_settings(settings, metrics_dir=Path(multiproc) if multiproc else None)
