"""The request pipeline: counting, faults, auth, idempotency, dispatch, error mapping."""

from __future__ import annotations

import base64
import json
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from .errors import ApiError, server_error
from .faults import FaultInjector
from .http_types import Response, error_response
from .params import Params, parse_body, parse_query
from .routes import Router
from .state import RequestInfo, State

ControlHandler = Callable[[str, str, Params], Response]


class RequestCounter:
    """Requests received per path (query excluded), faulted ones included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, path: str) -> None:
        """Count one request."""
        with self._lock:
            self._counts[path] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._counts.clear()


class IdempotencyCache:
    """Stored responses per (api key, Idempotency-Key), replayed like Stripe does.

    Bounded so that clients which send a fresh key with every POST (stripe-python does)
    cannot grow it without limit; the oldest keys are forgotten first.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[str, str], tuple[str, Response]] = {}

    def lookup(self, scope: tuple[str, str], fingerprint: str) -> Response | None:
        """The stored response, or None; a reused key with other params is a 400."""
        entry = self._entries.get(scope)
        if entry is None:
            return None
        if entry[0] != fingerprint:
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{scope[1]}' if you meant "
                "to execute a different request.",
                type_="idempotency_error",
                code="idempotency_key_in_use",
            )
        stored = entry[1]
        return Response(
            stored.status, stored.body, {**stored.headers, "Idempotent-Replayed": "true"}
        )

    def store(self, scope: tuple[str, str], fingerprint: str, response: Response) -> None:
        """Remember a response for replay."""
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[scope] = (fingerprint, response)


class EmulatorApp:
    """Turns raw HTTP requests into responses (None means: reset the connection)."""

    def __init__(
        self,
        *,
        state: State,
        router: Router,
        faults: FaultInjector,
        api_keys: frozenset[str],
        sleep: Callable[[float], None],
        control: ControlHandler,
    ) -> None:
        self.state = state
        self.router = router
        self.faults = faults
        self.api_keys = api_keys
        self.sleep = sleep
        self.control = control
        self.counter = RequestCounter()
        self.idempotency = IdempotencyCache()

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Response | None:
        """Serve one request; never raises."""
        split = urlsplit(target)
        path = split.path
        self.counter.add(path)
        try:
            params = parse_query(split.query)
            if method in ("POST", "DELETE"):
                params.update(parse_body(body, headers.get("content-type", "")))
            if path.startswith("/_emulator/"):
                return self.control(method, path, params)
            decision = self.faults.decide(method, path)
            if decision.latency > 0:
                # Outside the state lock, so a slow request does not stall the others.
                self.sleep(decision.latency)
            if decision.reset:
                return None
            if decision.error is not None:
                return self._finish(error_response(decision.error), headers, None)
            api_key = self._authenticate(headers)
            return self._serve(method, path, params, headers, api_key)
        except ApiError as exc:
            return self._finish(error_response(exc), headers, None)
        except Exception:
            # An emulator bug must reach the client as Stripe's 500, not as a dropped socket.
            message = traceback.format_exc(limit=3)
            return self._finish(error_response(server_error(message)), headers, None)

    def _serve(
        self, method: str, path: str, params: Params, headers: Mapping[str, str], api_key: str
    ) -> Response:
        idem_key = headers.get("idempotency-key") if method in ("POST", "DELETE") else None
        fingerprint = json.dumps([method, path, params], sort_keys=True) if idem_key else ""
        with self.state.lock:
            request_id = self.state.ids.new("req")
            if idem_key:
                replay = self.idempotency.lookup((api_key, idem_key), fingerprint)
                if replay is not None:
                    return self._finish(replay, headers, request_id)
            self.state.request = RequestInfo(request_id, idem_key)
            try:
                response = self.router.dispatch(method, path, params)
            except ApiError as exc:
                response = error_response(exc)
            finally:
                self.state.request = None
            if idem_key:
                self.idempotency.store((api_key, idem_key), fingerprint, response)
            return self._finish(response, headers, request_id)

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        raw = headers.get("authorization", "")
        key = ""
        if raw.startswith("Bearer "):
            key = raw[len("Bearer ") :].strip()
        elif raw.startswith("Basic "):
            try:
                key = base64.b64decode(raw[len("Basic ") :]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if key not in self.api_keys:
            raise ApiError(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}")
        return key

    def _finish(
        self, response: Response, headers: Mapping[str, str], request_id: str | None
    ) -> Response:
        out = Response(response.status, response.body, dict(response.headers))
        out.headers.setdefault("Content-Type", "application/json")
        out.headers["Request-Id"] = request_id or self.state.ids.new("req")
        out.headers["Stripe-Version"] = headers.get("stripe-version") or self.state.api_version
        if headers.get("idempotency-key"):
            out.headers["Idempotency-Key"] = headers["idempotency-key"]
        return out
