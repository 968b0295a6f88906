"""The API router and the catalog endpoints: account, customers, products, prices, events."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import ApiError, invalid_param, missing_param, no_such, unrecognized_url
from .http_types import ApiRequest, Handler, Response, json_response
from .params import Params, metadata_changes, opt_int, opt_str, req_str
from .state import State
from .store import Record
from .views import list_response, record_response, retrieve_response

Json = dict[str, Any]
Route = tuple[str, str, Handler]


class Router:
    """Maps (method, path) to handlers; `{id}` in a pattern captures one path segment."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [
            (method, re.compile("^" + pattern.replace("{id}", "([^/]+)") + "$"), handler)
            for method, pattern, handler in routes
        ]

    def dispatch(self, method: str, path: str, params: Params) -> Response:
        """Run the matching handler or raise Stripe's unrecognized-URL error."""
        for route_method, regex, handler in self._routes:
            if route_method == method:
                match = regex.match(path)
                if match:
                    return handler(ApiRequest(method, path, params, match.groups()))
        raise unrecognized_url(method, path)


def _metadata(params: Params) -> Json:
    changes = metadata_changes(params) or {}
    return {k: v for k, v in changes.items() if v is not None}


def payment_method_param(state: State, params: Params, name: str) -> str | None:
    """A payment method id that must be one of the emulator's test cards."""
    pm = opt_str(params, name)
    if pm and pm not in state.payment_methods:
        raise ApiError(404, f"No such PaymentMethod: '{pm}'", code="resource_missing", param=name)
    return pm or None


class CatalogRoutes:
    """Handlers for the non-billing resources."""

    def __init__(self, state: State) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        """This group's route table."""
        return [
            ("GET", "/v1/account", self.account),
            ("POST", "/v1/customers", self.create_customer),
            ("GET", "/v1/customers", self.list_customers),
            ("GET", "/v1/customers/{id}", self.get_customer),
            ("POST", "/v1/customers/{id}", self.update_customer),
            ("POST", "/v1/products", self.create_product),
            ("GET", "/v1/products", self.list_products),
            ("GET", "/v1/products/{id}", self.get_product),
            ("POST", "/v1/prices", self.create_price),
            ("GET", "/v1/prices", self.list_prices),
            ("GET", "/v1/prices/{id}", self.get_price),
            ("GET", "/v1/payment_methods/{id}", self.get_payment_method),
        ]

    def account(self, req: ApiRequest) -> Response:
        """GET /v1/account."""
        return json_response(self.state.account)

    def create_customer(self, req: ApiRequest) -> Response:
        """POST /v1/customers."""
        st, p = self.state, req.params
        settings = p.get("invoice_settings")
        default_pm = None
        if isinstance(settings, dict):
            default_pm = payment_method_param(st, settings, "default_payment_method")
        payment_method_param(st, p, "payment_method")
        record = create_customer(
            st,
            email=opt_str(p, "email"),
            name=opt_str(p, "name"),
            description=opt_str(p, "description"),
            metadata=_metadata(p),
            payment_method=default_pm,
        )
        return record_response(st, record, p)

    def get_customer(self, req: ApiRequest) -> Response:
        """GET /v1/customers/:id."""
        return record_response(self.state, self._customer(req.args[0]), req.params)

    def update_customer(self, req: ApiRequest) -> Response:
        """POST /v1/customers/:id (email, name, metadata, default payment method)."""
        st, p = self.state, req.params
        record = self._customer(req.args[0])
        changes: Json = {k: opt_str(p, k) for k in ("email", "name", "description") if k in p}
        if "metadata" in p:
            merged = dict(record.data["metadata"])
            for key, value in (metadata_changes(p) or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            changes["metadata"] = merged if metadata_changes(p) else {}
        settings = p.get("invoice_settings")
        if isinstance(settings, dict) and "default_payment_method" in settings:
            pm = payment_method_param(st, settings, "default_payment_method")
            changes["invoice_settings"] = {
                **record.data["invoice_settings"],
                "default_payment_method": pm,
            }
        old, new = st.replace(st.customers, record, changes)
        st.emit_update("customer.updated", old, new)
        return record_response(st, record, p)

    def list_customers(self, req: ApiRequest) -> Response:
        """GET /v1/customers (email, created, pagination)."""
        email = opt_str(req.params, "email")
        predicate = None if email is None else (lambda r: r.data["email"] == email)
        return list_response(
            self.state, self.state.customers, req.params, "customer", predicate=predicate
        )

    def create_product(self, req: ApiRequest) -> Response:
        """POST /v1/products."""
        st, p = self.state, req.params
        prod_id = opt_str(p, "id") or st.ids.new("prod")
        if prod_id in st.products:
            raise ApiError(
                400,
                f"Product already exists: {prod_id}",
                code="resource_already_exists",
                param="id",
            )
        data = st.catalog.product(
            prod_id, st.clock.now, name=req_str(p, "name"), metadata=_metadata(p)
        )
        record = st.products.add(Record(prod_id, st.clock.now, data))
        st.emit("product.created", data)
        return record_response(st, record, p)

    def get_product(self, req: ApiRequest) -> Response:
        """GET /v1/products/:id."""
        return retrieve_response(self.state, self.state.products, "product", req)

    def list_products(self, req: ApiRequest) -> Response:
        """GET /v1/products."""
        return list_response(self.state, self.state.products, req.params, "product")

    def create_price(self, req: ApiRequest) -> Response:
        """POST /v1/prices (recurring prices only; `product` or `product_data[name]`)."""
        st, p = self.state, req.params
        product = opt_str(p, "product")
        product_data = p.get("product_data")
        if product is None and isinstance(product_data, dict):
            name = req_str(product_data, "name")
            product = st.ids.new("prod")
            data = st.catalog.product(product, st.clock.now, name=name, metadata={})
            st.products.add(Record(product, st.clock.now, data))
            st.emit("product.created", data)
        if product is None:
            raise missing_param("product")
        if product not in st.products:
            raise no_such("product", product, "product")
        recurring = p.get("recurring")
        if not isinstance(recurring, dict):
            raise missing_param("recurring")
        interval = req_str(recurring, "interval")
        if interval not in ("day", "week", "month", "year"):
            raise invalid_param("recurring[interval]", f"Invalid interval: {interval}")
        unit_amount = opt_int(p, "unit_amount")
        if unit_amount is None:
            raise missing_param("unit_amount")
        price_id = st.ids.new("price")
        data = st.catalog.price(
            price_id,
            st.clock.now,
            product=product,
            unit_amount=unit_amount,
            currency=req_str(p, "currency").lower(),
            interval=interval,
            interval_count=opt_int(recurring, "interval_count") or 1,
            nickname=opt_str(p, "nickname"),
            lookup_key=opt_str(p, "lookup_key"),
            metadata=_metadata(p),
        )
        record = st.prices.add(Record(price_id, st.clock.now, data))
        st.emit("price.created", data)
        return record_response(st, record, p)

    def get_price(self, req: ApiRequest) -> Response:
        """GET /v1/prices/:id."""
        return retrieve_response(self.state, self.state.prices, "price", req)

    def list_prices(self, req: ApiRequest) -> Response:
        """GET /v1/prices (product filter)."""
        product = opt_str(req.params, "product")
        predicate = None if product is None else (lambda r: r.data["product"] == product)
        return list_response(
            self.state, self.state.prices, req.params, "price", predicate=predicate
        )

    def get_payment_method(self, req: ApiRequest) -> Response:
        """GET /v1/payment_methods/:id (the seeded test cards)."""
        pm = self.state.payment_methods.get(req.args[0])
        if pm is None:
            raise no_such("PaymentMethod", req.args[0])
        return json_response(pm)

    def _customer(self, cus_id: str) -> Record:
        record = self.state.customers.get(cus_id)
        if record is None:
            raise no_such("customer", cus_id)
        return record


def create_customer(
    state: State,
    *,
    email: str | None,
    name: str | None,
    description: str | None = None,
    metadata: Json | None = None,
    payment_method: str | None = None,
) -> Record:
    """Store a customer and emit customer.created (shared by the API and the test helpers)."""
    cus_id = state.ids.new("cus")
    data = state.catalog.customer(
        cus_id,
        state.clock.now,
        email=email,
        name=name,
        description=description,
        metadata=dict(metadata or {}),
        payment_method=payment_method,
    )
    record = state.customers.add(Record(cus_id, state.clock.now, data))
    state.emit("customer.created", data)
    return record
