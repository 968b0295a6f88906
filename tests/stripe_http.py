"""Serve a FakeStripe store over `responses`, so the real StripeClient and gateway run."""

from __future__ import annotations

import json
import re
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses

from tests.fakes import FakeStripe

API = "https://api.stripe.com"


def _page(objects: list[dict[str, Any]], query: dict[str, list[str]], url: str) -> dict[str, Any]:
    limit = int(query.get("limit", ["10"])[0])
    after = query.get("starting_after", [None])[0]
    ordered = sorted(objects, key=lambda o: (-o["created"], o["id"]))
    start = 0
    if after is not None:
        start = next(i for i, o in enumerate(ordered) if o["id"] == after) + 1
    chunk = ordered[start : start + limit]
    return {"object": "list", "url": url, "data": chunk, "has_more": start + limit < len(ordered)}


def serve(rsps: responses.RequestsMock, fake: FakeStripe, *, rate_limit_first: int = 0) -> None:
    """Register Stripe's list/retrieve/account endpoints backed by `fake`.

    `rate_limit_first` answers that many list requests with 429 before serving normally.
    """
    throttled = {"left": rate_limit_first}

    def headers() -> dict[str, str]:
        return {"Date": format_datetime(fake.now, usegmt=True), "Request-Id": "req_test"}

    def listing(kind: str) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            fake.stats.requests += 1
            if throttled["left"] > 0:
                throttled["left"] -= 1
                fake.stats.rate_limited += 1
                body = {"error": {"type": "invalid_request_error", "code": "rate_limit",
                                  "message": "Too many requests"}}
                return 429, headers(), json.dumps(body)
            query = parse_qs(urlparse(request.url).query)
            store = fake.subscriptions if kind == "subscriptions" else fake.invoices
            objects = list(store.values())
            if "status" in query and query["status"][0] != "all":
                objects = [o for o in objects if o["status"] == query["status"][0]]
            return 200, headers(), json.dumps(_page(objects, query, f"/v1/{kind}"))
        return callback

    def retrieve(kind: str) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            fake.stats.requests += 1
            object_id = urlparse(request.url).path.rsplit("/", 1)[1]
            fake.retrieved.append(object_id)
            store = fake.subscriptions if kind == "subscriptions" else fake.invoices
            if object_id not in store:
                body = {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                  "message": f"No such {kind[:-1]}: '{object_id}'"}}
                return 404, headers(), json.dumps(body)
            return 200, headers(), json.dumps(store[object_id])
        return callback

    def account(request: Any) -> tuple[int, dict[str, str], str]:
        fake.stats.requests += 1
        return 200, headers(), json.dumps({"id": fake.account_id, "object": "account"})

    rsps.add_callback(responses.GET, f"{API}/v1/account", callback=account)
    for kind in ("subscriptions", "invoices"):
        rsps.add_callback(responses.GET, f"{API}/v1/{kind}", callback=listing(kind))
        rsps.add_callback(
            responses.GET, re.compile(rf"{API}/v1/{kind}/\w+"), callback=retrieve(kind)
        )
