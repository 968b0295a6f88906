"""Stripe-format API errors raised inside the emulator and rendered as HTTP responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error Stripe would return: HTTP status plus ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body; type, code, message and param are always present."""
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }
        error.update(self.extra)
        return {"error": error}


def no_such(label: str, obj_id: str, param: str = "id") -> ApiError:
    """404 for an id that does not exist, worded like Stripe."""
    return ApiError(404, f"No such {label}: '{obj_id}'", code="resource_missing", param=param)


def missing_param(param: str) -> ApiError:
    """400 for a required parameter that was not sent."""
    return ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def invalid_param(param: str, message: str, code: str = "parameter_invalid") -> ApiError:
    """400 for a parameter with a bad value."""
    return ApiError(400, message, code=code, param=param)


def unrecognized_url(method: str, path: str) -> ApiError:
    """404 for a path the emulator does not serve."""
    # No code, as on Stripe: `resource_missing` would read as "that object was deleted".
    return ApiError(404, f"Unrecognized request URL ({method}: {path}).")


def card_declined(
    *, code: str, decline_code: str, message: str, charge: str, payment_method: str
) -> ApiError:
    """402 card error, as returned when a charge for an invoice is declined."""
    return ApiError(
        402,
        message,
        type_="card_error",
        code=code,
        extra={
            "decline_code": decline_code,
            "charge": charge,
            "payment_method": {"id": payment_method},
        },
    )


def retry_headers(should_retry: bool | None, retry_after: float | None = None) -> dict[str, str]:
    """``Stripe-Should-Retry`` and ``Retry-After`` headers; None leaves a header out."""
    headers = {}
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = str(should_retry).lower()
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return headers


def rate_limited(headers: Mapping[str, str] | None = None) -> ApiError:
    """429 with Stripe's `rate_limit` code."""
    return ApiError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers=headers,
    )


def server_error(message: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """500 api_error, as Stripe returns for its own failures."""
    return ApiError(500, message, type_="api_error", headers=headers)
