"""Request/response types shared by the router, the app and the HTTP server."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .params import Params


@dataclass(slots=True)
class Response:
    """An HTTP response ready to write."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A parsed, authenticated API request; `args` are the path's captured ids."""

    method: str
    path: str
    params: Params
    args: tuple[str, ...] = ()


Handler = Callable[[ApiRequest], Response]


def json_response(obj: Any, status: int = 200) -> Response:
    """Serialise `obj` compactly."""
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


def error_response(error: ApiError) -> Response:
    """The Stripe-format body and headers for an error."""
    response = json_response(error.body(), error.status)
    response.headers.update(error.headers)
    return response
