"""Rendering records and pages as API responses, with cursor checks and `expand`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import invalid_param, no_such
from .http_types import ApiRequest, Response
from .params import Params, limit, opt_str, range_filter, str_list
from .state import State
from .store import Collection, PageQuery, Record

Json = dict[str, Any]


def retrieve_response(state: State, store: Collection, label: str, req: ApiRequest) -> Response:
    """GET /v1/<objects>/:id: the object, or Stripe's 404 resource_missing."""
    record = store.get(req.args[0])
    if record is None:
        raise no_such(label, req.args[0])
    return record_response(state, record, req.params)


def record_response(state: State, record: Record, params: Params, status: int = 200) -> Response:
    """One object, straight from its cached JSON unless `expand` asks for more."""
    paths = str_list(params, "expand")
    if not paths:
        return Response(status, state.wire(record))
    obj = json.loads(state.wire(record))
    for path in paths:
        _expand(state, obj, path.split("."))
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


def list_response(
    state: State,
    collection: Collection,
    params: Params,
    label: str,
    *,
    predicate: Callable[[Record], bool] | None = None,
    index: tuple[str, str] | None = None,
) -> Response:
    """A Stripe list page, newest first, built by joining cached per-object JSON."""
    if params.get("starting_after") and params.get("ending_before"):
        raise invalid_param(
            "ending_before",
            "You may only specify one of these parameters: starting_after, ending_before.",
        )
    query = PageQuery(
        limit=limit(params),
        created=range_filter(params, "created"),
        starting_after=_cursor(collection, params, "starting_after", label),
        ending_before=_cursor(collection, params, "ending_before", label),
        index=index,
        predicate=predicate,
    )
    records, has_more = collection.page(query)
    paths = [
        p.removeprefix("data.") for p in str_list(params, "expand") or [] if p.startswith("data.")
    ]
    if paths:
        items = []
        for record in records:
            obj = json.loads(state.wire(record))
            for path in paths:
                _expand(state, obj, path.split("."))
            items.append(json.dumps(obj, separators=(",", ":")).encode())
    else:
        items = [state.wire(r) for r in records]
    body = b"".join(
        (
            b'{"object":"list","data":[',
            b",".join(items),
            b'],"has_more":',
            b"true" if has_more else b"false",
            b',"url":',
            json.dumps(collection.url).encode(),
            b"}",
        )
    )
    return Response(200, body)


def plain_list(url: str, items: list[Json], params: Params) -> Response:
    """A list page over a small in-memory list (webhook endpoints)."""
    size = limit(params)
    body = {"object": "list", "data": items[:size], "has_more": len(items) > size, "url": url}
    return Response(200, json.dumps(body, separators=(",", ":")).encode())


def _cursor(collection: Collection, params: Params, name: str, label: str) -> Record | None:
    obj_id = opt_str(params, name)
    if not obj_id:
        return None
    record = collection.get(obj_id)
    if record is None:
        raise no_such(label, obj_id, name)
    return record


def _expand(state: State, node: Any, parts: list[str]) -> None:
    """Replace an id at `parts` with the object it names, recursing along the path."""
    if not parts or not isinstance(node, dict):
        return
    key, rest = parts[0], parts[1:]
    value = node.get(key)
    if isinstance(value, str):
        target = state.find(value)
        if target is not None:
            value = json.loads(state.wire(target))
            node[key] = value
        elif value in state.payment_methods:
            value = dict(state.payment_methods[value])
            node[key] = value
    _expand(state, value, rest)
