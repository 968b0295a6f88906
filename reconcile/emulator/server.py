"""A threaded stdlib HTTP server bound to 127.0.0.1 that feeds the EmulatorApp."""

from __future__ import annotations

import socket
import struct
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

from .app import EmulatorApp


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many keep-alive connections at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        super().__init__(address, _Handler)
        self.app = app


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, which stripe-python's requests session relies on.
    protocol_version = "HTTP/1.1"
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed
        # ACKs would add ~40 ms to small responses.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header from the emulator clock: clients read it as Stripe's time."""
        now = cast(_Server, self.server).app.state.clock.now
        return formatdate(now if timestamp is None else timestamp, usegmt=True)

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request logging; it would dominate benchmark time."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        app = cast(_Server, self.server).app
        response = app.handle(self.command, self.path, headers, body)
        if response is None:
            self._reset()
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST and no response, like a dropped proxy."""
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The file objects hold references to the socket; close them first so that
        # sock.close() really closes the descriptor (and sends the RST) right now.
        self.rfile.close()
        self.wfile.close()
        sock.close()


class RunningServer:
    """The server thread; `url` is the API base such as http://127.0.0.1:54321."""

    def __init__(self, app: EmulatorApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), app)
        address = self._server.server_address
        self.url = f"http://{address[0]!s}:{address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stripe-emulator",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting requests and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
