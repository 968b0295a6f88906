"""The API view of stored objects, and readers for fields whose place depends on the shape."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def items_list(sub_id: str, item: Json) -> Json:
    """The inline `items` list of a subscription."""
    return {
        "object": "list",
        "data": [item],
        "has_more": False,
        "total_count": 1,
        "url": f"/v1/subscription_items?subscription={sub_id}",
    }


def invoice_subscription(invoice: Json) -> str | None:
    """The subscription an invoice bills, read from `parent` (pinned shape)."""
    parent = invoice.get("parent")
    if not parent:
        return None
    details = parent.get("subscription_details")
    return None if details is None else details.get("subscription")


def sub_period(sub: Json) -> tuple[int, int]:
    """A subscription's current period, read from its first item (pinned shape)."""
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


class Renderer:
    """Turns stored objects (pinned shape) into what the API returns.

    With `legacy` the subscription period moves back to the top level and the invoice
    regains `subscription` (and `paid`), as in API versions before basil; webhook payloads
    and older emulators carry that shape, so readers must cope with both.
    """

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy

    def render(self, obj: Json) -> Json:
        """The API view of `obj`; the same dict when no transformation is needed."""
        if not self.legacy:
            return obj
        kind = obj.get("object")
        if kind == "subscription":
            return self._legacy_subscription(obj)
        if kind == "invoice":
            return self._legacy_invoice(obj)
        return obj

    @staticmethod
    def _legacy_subscription(sub: Json) -> Json:
        start, end = sub_period(sub)
        items = sub["items"]
        data = [
            {
                k: v
                for k, v in item.items()
                if k not in ("current_period_start", "current_period_end")
            }
            for item in items["data"]
        ]
        out = {k: v for k, v in sub.items() if k != "items"}
        out["current_period_start"] = start
        out["current_period_end"] = end
        out["items"] = {**items, "data": data}
        out["plan"] = data[0]["plan"]
        out["quantity"] = data[0]["quantity"]
        return out

    @staticmethod
    def _legacy_invoice(invoice: Json) -> Json:
        out = {k: v for k, v in invoice.items() if k != "parent"}
        out["subscription"] = invoice_subscription(invoice)
        out["paid"] = invoice["status"] == "paid"
        return out
