"""Event and webhook-endpoint endpoints."""

from __future__ import annotations

import json

from .errors import invalid_param
from .http_types import ApiRequest, Response
from .params import opt_str, req_str, str_list
from .routes import Route
from .state import State
from .views import list_response, plain_list, retrieve_response


class EventRoutes:
    """Handlers for /v1/events and /v1/webhook_endpoints."""

    def __init__(self, state: State) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        """This group's route table."""
        return [
            ("GET", "/v1/events", self.list_events),
            ("GET", "/v1/events/{id}", self.get_event),
            ("GET", "/v1/webhook_endpoints", self.list_webhook_endpoints),
            ("POST", "/v1/webhook_endpoints", self.create_webhook_endpoint),
        ]

    def list_events(self, req: ApiRequest) -> Response:
        """GET /v1/events (type with `*` wildcard, types[], created, pagination)."""
        st, p = self.state, req.params
        st.prune_events()
        event_type, types = opt_str(p, "type"), str_list(p, "types")
        if event_type is not None and types is not None:
            raise invalid_param(
                "types", "You may only specify one of these parameters: type, types."
            )
        wanted = set(types or [])
        prefix = event_type[:-1] if event_type and event_type.endswith("*") else None
        predicate = None
        if wanted:
            predicate = lambda r: r.data["type"] in wanted  # noqa: E731
        elif prefix is not None:
            predicate = lambda r: str(r.data["type"]).startswith(prefix)  # noqa: E731
        elif event_type is not None:
            predicate = lambda r: r.data["type"] == event_type  # noqa: E731
        return list_response(st, st.events, p, "event", predicate=predicate)

    def get_event(self, req: ApiRequest) -> Response:
        """GET /v1/events/:id (within the retention window)."""
        self.state.prune_events()
        return retrieve_response(self.state, self.state.events, "event", req)

    def list_webhook_endpoints(self, req: ApiRequest) -> Response:
        """GET /v1/webhook_endpoints (newest first)."""
        items = [e.to_json(with_secret=False) for e in reversed(self.state.webhooks.endpoints)]
        return plain_list("/v1/webhook_endpoints", items, req.params)

    def create_webhook_endpoint(self, req: ApiRequest) -> Response:
        """POST /v1/webhook_endpoints: the response alone carries the signing secret."""
        st, p = self.state, req.params
        endpoint = st.webhooks.add(
            st.ids.new("we"),
            req_str(p, "url"),
            created=st.clock.now,
            enabled_events=str_list(p, "enabled_events") or ["*"],
            api_version=opt_str(p, "api_version"),
        )
        return Response(200, json.dumps(endpoint.to_json(with_secret=True)).encode())
