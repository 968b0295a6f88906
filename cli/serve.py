"""`reconcile serve`: the webhook receiver under uvicorn."""

from __future__ import annotations

import functools
import os
import tempfile

import click
import uvicorn

from cli.common import handle_errors, settings_for
from reconcile.webhook import REQUIRED_SETTINGS, app_from_settings

# In-flight requests get this long to finish after SIGTERM; it stays under the 30 s that
# orchestrators (Kubernetes' default grace period) wait before they kill the process.
GRACEFUL_SHUTDOWN_S = 25


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Worker processes, each with its own database pool.",
)
@handle_errors
def serve_command(host: str, port: int, workers: int) -> None:
    """Receive Stripe webhooks at POST /api/v1/stripe-webhooks.

    Also serves GET /healthz, /readyz and /metrics. SIGTERM stops accepting connections and
    lets in-flight requests finish.
    """
    settings = settings_for(*REQUIRED_SETTINGS)
    run = functools.partial(
        uvicorn.run,
        host=host,
        port=port,
        # Our handler formats uvicorn's records; the summary line per webhook replaces
        # the access log.
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    if workers == 1:
        run(app_from_settings(settings))
        return
    # Worker processes re-read the settings themselves (uvicorn needs an import string), and
    # share one directory of metric files so that /metrics adds up every worker.
    with tempfile.TemporaryDirectory(prefix="reconcile-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        run("reconcile.webhook:app_from_env", factory=True, workers=workers)
