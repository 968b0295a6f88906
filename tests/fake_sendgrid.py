"""A fake SendGrid: a real HTTP server on 127.0.0.1 that records /v3/mail/send requests.

The sendgrid library talks urllib (through python_http_client), which `responses` cannot
intercept, so tests point the real client's host at this server instead. Statuses to
answer are scripted (202 by default); `hold()` keeps requests waiting until `release()`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, and what it answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int

    @property
    def notification_id(self) -> str:
        """The custom_args notification id our client sets."""
        return str(self.body["custom_args"]["notification_id"])


@dataclass
class FakeSendGrid:
    """Scripted answers and the record of requests; mutable on purpose, one per test."""

    url: str = ""
    recorded: list[Recorded] = field(default_factory=list)
    script: deque[int] = field(default_factory=deque)
    default_status: int = 202
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _gate: threading.Event = field(default_factory=threading.Event)
    _release_status: int = 503

    def __post_init__(self) -> None:
        self._gate.set()

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order (then the default)."""
        with self.lock:
            self.script.extend(statuses)

    def hold(self) -> None:
        """Keep every request waiting (as a slow provider would) until `release`."""
        self._gate.clear()

    def release(self, status: int = 503) -> None:
        """Let held requests go, answering them `status`."""
        self._release_status = status
        self._gate.set()

    @property
    def accepted(self) -> list[Recorded]:
        """Requests answered 2xx: e-mails SendGrid would deliver."""
        with self.lock:
            return [r for r in self.recorded if r.status < 300]

    def _next_status(self, was_held: bool) -> int:
        with self.lock:
            if was_held:
                return self._release_status
            return self.script.popleft() if self.script else self.default_status


def _handler(fake: FakeSendGrid) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            was_held = not fake._gate.is_set()
            if was_held:
                with fake.lock:
                    fake.held += 1
                fake._gate.wait(30)
            status = fake._next_status(was_held)
            with fake.lock:
                number = len(fake.recorded) + 1
                fake.recorded.append(
                    Recorded(json.loads(body), {k.lower(): v for k, v in self.headers.items()},
                             status)
                )
            payload = b"" if status < 300 else json.dumps(
                {"errors": [{"message": f"scripted {status}", "field": None}]}
            ).encode()
            self.send_response(status)
            if status < 300:
                self.send_header("X-Message-Id", f"msg-{number}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    """Serve a FakeSendGrid on 127.0.0.1 for the duration of the block."""
    fake = FakeSendGrid()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release()
        server.shutdown()
        server.server_close()
