"""Decoding Stripe's form-encoded parameters (``a[b][0][c]=v``) and checking their values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .errors import ApiError, invalid_param, missing_param

Params = dict[str, Any]

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> Params:
    """Nest bracketed keys into dicts; a trailing ``[]`` appends to a list."""
    root: Params = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        tokens = [head, *_BRACKETS.findall("[" + rest)] if rest else [head]
        appends = len(tokens) > 1 and tokens[-1] == ""
        if appends:
            # `types[]=a&types[]=b` is how some clients send arrays; keep them ordered.
            tokens = tokens[:-1]
        node = root
        for token in tokens[:-1]:
            child = node.get(token)
            if not isinstance(child, dict):
                child = {}
                node[token] = child
            node = child
        last = tokens[-1]
        if appends:
            existing = node.get(last)
            items = existing if isinstance(existing, list) else []
            items.append(value)
            node[last] = items
        else:
            node[last] = value
    return root


def parse_query(query: str) -> Params:
    """Parse a URL query string."""
    return parse_pairs(parse_qsl(query, keep_blank_values=True))


def parse_body(body: bytes, content_type: str) -> Params:
    """Parse a request body: form-encoded like Stripe, JSON tolerated for hand-written tests."""
    if not body:
        return {}
    if content_type.startswith("application/json"):
        loaded = json.loads(body)
        if not isinstance(loaded, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        return loaded
    return parse_query(body.decode("utf-8"))


def opt_str(params: Params, name: str) -> str | None:
    """A string parameter or None; nested values are rejected."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_param(name, f"Invalid string: {value!r}", "parameter_invalid_string")
    return value


def req_str(params: Params, name: str) -> str:
    """A required, non-empty string parameter."""
    value = opt_str(params, name)
    if not value:
        raise missing_param(name)
    return value


def opt_int(params: Params, name: str) -> int | None:
    """An integer parameter or None."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid_param(name, f"Invalid integer: {value!r}", "parameter_invalid_integer")
    try:
        return int(value)
    except ValueError:
        raise invalid_param(
            name, f"Invalid integer: {value}", "parameter_invalid_integer"
        ) from None


def opt_bool(params: Params, name: str) -> bool | None:
    """A boolean parameter (``true``/``false``) or None."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if value in ("true", "false"):
        return bool(value == "true")
    raise invalid_param(name, f"Invalid boolean: {value}")


def limit(params: Params) -> int:
    """The page size: 1..100, default 10, as Stripe enforces it."""
    value = opt_int(params, "limit")
    if value is None:
        return 10
    if not 1 <= value <= 100:
        raise invalid_param(
            "limit",
            f"This value must be between 1 and 100 (it currently is '{value}').",
            "parameter_invalid_integer",
        )
    return value


def str_list(params: Params, name: str) -> list[str] | None:
    """An array parameter, sent either as ``name[0]=..`` or ``name[]=..``."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        try:
            ordered = sorted(value.items(), key=lambda kv: int(kv[0]))
        except ValueError:
            raise invalid_param(name, f"Invalid array: {name}") from None
        return [str(v) for _, v in ordered]
    raise invalid_param(name, f"Invalid array: {name}")


def indexed_dicts(params: Params, name: str) -> list[Params]:
    """An array of hashes such as ``items[0][price]``."""
    value = params.get(name)
    if value is None:
        return []
    entries = value if isinstance(value, list) else None
    if entries is None and isinstance(value, dict):
        try:
            entries = [v for _, v in sorted(value.items(), key=lambda kv: int(kv[0]))]
        except ValueError:
            entries = None
    if entries is None or not all(isinstance(e, dict) for e in entries):
        raise invalid_param(name, f"Invalid array: {name}")
    return entries


def metadata_changes(params: Params) -> dict[str, str | None] | None:
    """Metadata edits: a value of "" deletes the key; ``metadata=""`` clears everything."""
    value = params.get("metadata")
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_param("metadata", "Invalid hash")
    return {str(k): (None if v == "" else str(v)) for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class RangeFilter:
    """A ``created[gt|gte|lt|lte]`` (or ``created=<int>``) filter."""

    gte: int | None = None
    lt: int | None = None

    def matches(self, value: int) -> bool:
        """Whether `value` lies in the range."""
        return (self.gte is None or value >= self.gte) and (self.lt is None or value < self.lt)


def range_filter(params: Params, name: str) -> RangeFilter | None:
    """Parse a timestamp range into inclusive-lower, exclusive-upper bounds."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        exact = opt_int(params, name)
        return None if exact is None else RangeFilter(gte=exact, lt=exact + 1)
    if not isinstance(value, dict):
        raise invalid_param(name, f"Invalid {name} filter")
    bounds = {op: opt_int(value, op) for op in ("gt", "gte", "lt", "lte")}
    unknown = set(value) - set(bounds)
    if unknown:
        raise invalid_param(
            f"{name}[{sorted(unknown)[0]}]", "Received unknown parameter", "parameter_unknown"
        )
    lows = [
        v
        for v in (bounds["gte"], None if bounds["gt"] is None else bounds["gt"] + 1)
        if v is not None
    ]
    highs = [
        v
        for v in (bounds["lt"], None if bounds["lte"] is None else bounds["lte"] + 1)
        if v is not None
    ]
    return RangeFilter(gte=max(lows) if lows else None, lt=min(highs) if highs else None)
