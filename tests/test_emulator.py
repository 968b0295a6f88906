"""The Stripe emulator's read API: listing, pagination, filters, auth, errors and shapes.

Everything goes through the real stripe-python client (or raw HTTP where the wire matters).
Billing, webhooks, faults and seeding live in the other ``test_emulator_*`` modules.
"""

from __future__ import annotations

import http.client
import json
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe

from reconcile.emulator import CURRENT_API_VERSION, LEGACY_API_VERSION, StripeEmulator

START = 1_800_000_000




def raw_get(emu: StripeEmulator, path: str, key: str | None = None) -> tuple[int, Any, Any]:
    """GET over plain http.client: (status, parsed body, headers)."""
    url = urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body, response.headers


def newest_first(objects: list[dict[str, Any]]) -> list[str]:
    """Ids in Stripe's list order."""
    return [o["id"] for o in sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)]


def test_pages_come_newest_first_with_has_more(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """Pages of 100 follow (created, id) descending and has_more is false only on the last."""
    emu.seed(250, rng_seed=3)
    expected = newest_first(emu.objects("subscriptions"))
    seen: list[str] = []
    flags: list[bool] = []
    params: dict[str, Any] = {"status": "all", "limit": 100}
    while True:
        page = client.v1.subscriptions.list(cast(Any, params))
        seen += [s.id for s in page.data]
        flags.append(page.has_more)
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert seen == expected
    assert flags == [True, True, False]
    assert page.url == "/v1/subscriptions" and page["object"] == "list"


def test_auto_paging_costs_one_request_per_page(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """Listing 250 objects 100 at a time makes exactly 3 requests."""
    emu.seed(250, rng_seed=3)
    emu.reset_request_counts()
    ids = [
        s.id
        for s in client.v1.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter()
    ]
    assert len(ids) == len(set(ids)) == 250
    assert emu.request_counts() == {"/v1/subscriptions": 3}


def test_ending_before_returns_the_previous_page(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """ending_before gives the page just before the cursor, still newest first."""
    emu.seed(30, rng_seed=5)
    expected = newest_first(emu.objects("subscriptions"))
    page = client.v1.subscriptions.list(
        {"status": "all", "limit": 5, "ending_before": expected[12]}
    )
    assert [s.id for s in page.data] == expected[7:12]
    assert page.has_more is True
    first = client.v1.subscriptions.list(
        {"status": "all", "limit": 5, "ending_before": expected[3]}
    )
    assert [s.id for s in first.data] == expected[0:3]
    assert first.has_more is False


def test_default_status_hides_canceled_but_all_includes_them(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """No status filter excludes canceled subscriptions; status=all returns every status."""
    emu.seed(300, rng_seed=7)
    every = emu.objects("subscriptions")
    default = list(client.v1.subscriptions.list({"limit": 100}).auto_paging_iter())
    everything = list(
        client.v1.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter()
    )
    assert {s.status for s in default} >= {"active", "past_due", "trialing"}
    assert "canceled" not in {s.status for s in default}
    assert len(default) == sum(1 for s in every if s["status"] != "canceled")
    assert len(everything) == len(every)


def test_specific_and_ended_status_filters(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """status=past_due returns only those; status=ended returns canceled and expired ones."""
    emu.seed(300, rng_seed=7)
    every = emu.objects("subscriptions")
    past_due = list(client.v1.subscriptions.list({"status": "past_due"}).auto_paging_iter())
    ended = list(client.v1.subscriptions.list({"status": "ended"}).auto_paging_iter())
    assert past_due and {s.status for s in past_due} == {"past_due"}
    assert len(ended) == sum(1 for s in every if s["status"] in ("canceled", "incomplete_expired"))


def test_created_filters_bound_the_range(emu: StripeEmulator, client: stripe.StripeClient) -> None:
    """created[gt|gte|lt|lte] and created=<int> select exactly the matching objects."""
    emu.seed(200, rng_seed=11)
    subs = emu.objects("subscriptions")
    pivot = sorted(s["created"] for s in subs)[100]

    def ids(created: Any) -> set[str]:
        params: Any = {"status": "all", "limit": 100, "created": created}
        return {s.id for s in client.v1.subscriptions.list(params).auto_paging_iter()}

    def expect(pred: Any) -> set[str]:
        return {s["id"] for s in subs if pred(s["created"])}

    assert ids({"gt": pivot}) == expect(lambda c: c > pivot)
    assert ids({"gte": pivot}) == expect(lambda c: c >= pivot)
    assert ids({"lt": pivot}) == expect(lambda c: c < pivot)
    assert ids({"lte": pivot, "gt": pivot - 86_400 * 30}) == expect(
        lambda c: pivot - 86_400 * 30 < c <= pivot
    )
    assert ids(pivot) == expect(lambda c: c == pivot)


def test_customer_and_price_filters(emu: StripeEmulator, client: stripe.StripeClient) -> None:
    """customer= and price= narrow subscription lists; customer/subscription narrow invoices."""
    monthly = emu.create_price(unit_amount=1000)
    yearly = emu.create_price(unit_amount=10000, interval="year")
    alice, bob = emu.create_customer(email="a@x.test"), emu.create_customer(email="b@x.test")
    s1 = emu.create_subscription(alice["id"], monthly["id"])
    s2 = emu.create_subscription(alice["id"], yearly["id"])
    s3 = emu.create_subscription(bob["id"], monthly["id"])
    by_customer = client.v1.subscriptions.list({"customer": alice["id"]})
    assert [s.id for s in by_customer.data] == [s2["id"], s1["id"]]
    by_price = client.v1.subscriptions.list({"price": monthly["id"]})
    assert [s.id for s in by_price.data] == [s3["id"], s1["id"]]
    invoices = client.v1.invoices.list({"subscription": s2["id"]})
    assert [i.id for i in invoices.data] == [s2["latest_invoice"]]
    bobs = client.v1.invoices.list({"customer": bob["id"], "status": "paid"})
    assert [i.id for i in bobs.data] == [s3["latest_invoice"]]


def test_limit_outside_1_to_100_is_rejected(client: stripe.StripeClient) -> None:
    """limit=0 and limit=101 are 400 invalid_request_error on param limit."""
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.subscriptions.list({"limit": bad})
        assert info.value.http_status == 400 and info.value.param == "limit"


def test_unknown_ids_are_404_resource_missing(client: stripe.StripeClient) -> None:
    """A missing object or cursor is 404 resource_missing in Stripe's error format."""
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.retrieve("sub_nope")
    assert info.value.http_status == 404 and info.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as cursor:
        client.v1.invoices.list({"starting_after": "in_nope"})
    assert cursor.value.code == "resource_missing" and cursor.value.param == "starting_after"


def test_missing_or_unknown_api_key_is_401(emu: StripeEmulator) -> None:
    """No key and a wrong key both get 401 with type, code, message and param present."""
    for key in (None, "sk_test_wrong"):
        status, body, _ = raw_get(emu, "/v1/subscriptions", key)
        assert status == 401
        assert set(body["error"]) >= {"type", "code", "message", "param"}
        assert body["error"]["type"] == "invalid_request_error"
    bad = stripe.StripeClient(api_key="sk_test_wrong", base_addresses={"api": emu.url})
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.subscriptions.list()


def test_raw_request_lists_like_the_reconciler_does(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """client.raw_request('get', '/v1/subscriptions', status='all', limit=100) works."""
    emu.seed(120, rng_seed=2)
    response = client.raw_request("get", "/v1/subscriptions", status="all", limit=100)
    body = json.loads(response.body)
    assert len(body["data"]) == 100 and body["has_more"] is True
    events = client.raw_request("get", "/v1/events", **{"types[0]": "invoice.paid"})
    assert json.loads(events.body)["object"] == "list"


def test_account_endpoint(emu: StripeEmulator) -> None:
    """GET /v1/account returns an acct_ object."""
    status, body, _ = raw_get(emu, "/v1/account", emu.api_key)
    assert status == 200 and body["object"] == "account" and body["id"].startswith("acct_")


def test_date_header_follows_the_emulator_clock(emu: StripeEmulator) -> None:
    """Clients read the Date header as Stripe's time, so it tracks advance()."""
    emu.advance_to(START + 3600)
    _, _, headers = raw_get(emu, "/v1/account", emu.api_key)
    assert parsedate_to_datetime(headers["Date"]).timestamp() == START + 3600


def test_pinned_shape_puts_periods_on_items_and_subscription_under_parent(
    emu: StripeEmulator, client: stripe.StripeClient
) -> None:
    """In 2026-10-28.endive the period is on items.data[] and invoices use parent."""
    price = emu.create_price()
    sub = client.v1.subscriptions.create(
        {"customer": emu.create_customer()["id"], "items": [{"price": price["id"]}]}
    )
    raw = emu.get(sub.id)
    item = raw["items"]["data"][0]
    assert "current_period_end" not in raw
    assert item["current_period_start"] == START and item["current_period_end"] > START
    assert item["price"]["id"] == price["id"] and item["plan"]["object"] == "plan"
    assert raw["items"]["object"] == "list"
    invoice = emu.get(raw["latest_invoice"])
    assert "subscription" not in invoice
    assert invoice["parent"]["type"] == "subscription_details"
    assert invoice["parent"]["subscription_details"]["subscription"] == sub.id
    assert emu.api_version == CURRENT_API_VERSION == stripe.api_version


def test_legacy_shapes_flag_emits_the_older_shape() -> None:
    """legacy_shapes=True puts current_period_* on the subscription and invoice.subscription."""
    with StripeEmulator(start_time=START, legacy_shapes=True) as emu:
        sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
        assert sub["current_period_start"] == START
        assert "current_period_end" not in sub["items"]["data"][0]
        invoice = emu.get(sub["latest_invoice"])
        assert invoice["subscription"] == sub["id"] and "parent" not in invoice
        assert invoice["paid"] is True
        event = emu.events("customer.subscription.created")[0]
        assert event["api_version"] == LEGACY_API_VERSION
        assert "current_period_end" in event["data"]["object"]


def test_expand_replaces_ids_with_objects(emu: StripeEmulator, client: stripe.StripeClient) -> None:
    """expand[]=latest_invoice and data.customer inline the referenced objects."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    one = client.v1.subscriptions.retrieve(sub["id"], {"expand": ["latest_invoice"]})
    assert isinstance(one.latest_invoice, stripe.Invoice)
    page = client.v1.subscriptions.list({"expand": ["data.customer"]})
    assert isinstance(page.data[0].customer, stripe.Customer)


def test_webhook_endpoints_can_be_created_and_listed(client: stripe.StripeClient) -> None:
    """POST returns the whsec_ secret once; the list shows the endpoint without it."""
    created = client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/hook", "enabled_events": ["invoice.paid"]}
    )
    assert (created.secret or "").startswith("whsec_")
    listed = client.v1.webhook_endpoints.list()
    assert [e.id for e in listed.data] == [created.id]
    assert "secret" not in listed.data[0]


def test_control_surface_advances_the_clock_over_http(emu: StripeEmulator) -> None:
    """POST /_emulator/clock/advance moves the clock and reports the events it caused."""
    sub = emu.create_subscription(emu.create_customer()["id"], emu.create_price()["id"])
    url = urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    conn.request("POST", "/_emulator/clock/advance?seconds=2764800")
    body = json.loads(conn.getresponse().read())
    assert body["now"] == START + 2_764_800 == emu.now
    assert body["events"] and emu.get(sub["id"])["items"]["data"][0]["current_period_start"] > START
