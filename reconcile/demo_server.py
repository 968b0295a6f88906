"""Serve an ASGI app (the webhook receiver) under uvicorn in a thread, on 127.0.0.1.

For the demo and the end-to-end test: the real server stack (uvicorn, the app's lifespan,
HTTP over loopback) without a subprocess. The port is chosen by the kernel when the socket is
bound, so two runs never race for one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from reconcile.errors import ReconcileError

LOOPBACK = "127.0.0.1"


class ServerStartError(ReconcileError):
    """The app did not start serving (its lifespan failed, or it timed out)."""


@contextmanager
def serving(app: ASGIApp, *, start_timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL, e.g. http://127.0.0.1:41234."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, server_header=False,
        # Short: the demo and tests stop the server right after their last request.
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread, so Ctrl-C stays ours.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="receiver", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServerStartError(
                    "the webhook receiver did not start",
                    hint="its start-up error is in the log",
                )
            time.sleep(0.01)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout)
        sock.close()
