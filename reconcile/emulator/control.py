"""Optional HTTP control surface under /_emulator/ for out-of-process tests and demos.

No API key is needed; the server only listens on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any, Protocol

from .errors import ApiError, unrecognized_url
from .http_types import Response, error_response, json_response
from .params import Params, opt_int, req_str, str_list
from .webhooks import DeliveryResult, WebhookEndpoint


class ControlTarget(Protocol):
    """The subset of StripeEmulator the control surface drives."""

    @property
    def now(self) -> int: ...

    def advance(self, delta: timedelta) -> list[str]: ...

    def request_counts(self) -> dict[str, int]: ...

    def reset_request_counts(self) -> None: ...

    def deliver_pending(self) -> list[DeliveryResult]: ...

    def add_webhook_endpoint(
        self, url: str, *, enabled_events: tuple[str, ...] = ("*",)
    ) -> WebhookEndpoint: ...


class ControlSurface:
    """Routes `/_emulator/...` requests to the emulator's Python API."""

    def __init__(self, target: ControlTarget) -> None:
        self.target = target

    def __call__(self, method: str, path: str, params: Params) -> Response:
        try:
            return self._dispatch(method, path, params)
        except ApiError as exc:
            return error_response(exc)

    def _dispatch(self, method: str, path: str, params: Params) -> Response:
        t = self.target
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_emulator/clock"):
            return json_response({"now": t.now})
        if route == ("POST", "/_emulator/clock/advance"):
            seconds = opt_int(params, "seconds") or 0
            events = t.advance(timedelta(seconds=seconds))
            return json_response({"now": t.now, "events": events})
        if route == ("GET", "/_emulator/requests"):
            return json_response(t.request_counts())
        if route == ("POST", "/_emulator/requests/reset"):
            t.reset_request_counts()
            return json_response({"ok": True})
        if route == ("POST", "/_emulator/webhooks/deliver"):
            return json_response({"results": [_result(r) for r in t.deliver_pending()]})
        if route == ("POST", "/_emulator/webhook_endpoints"):
            wanted = tuple(str_list(params, "enabled_events") or ["*"])
            endpoint = t.add_webhook_endpoint(req_str(params, "url"), enabled_events=wanted)
            return json_response(endpoint.to_json(with_secret=True))
        raise unrecognized_url(method, path)


def _result(result: DeliveryResult) -> dict[str, Any]:
    out = asdict(result)
    out["ok"] = result.ok
    return out
