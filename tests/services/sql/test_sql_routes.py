"""Which permission each call needs, decided before anything touches the database."""

from __future__ import annotations

import pytest

from servicebay.core.errors import Forbidden, MethodNotAllowed, NotFound, ServiceBayError
from servicebay.services.base import Permission, ServiceCall
from tests.services.sql.sql_support import Shop


@pytest.mark.parametrize(
    ("method", "path", "resource", "action"),
    [
        ("GET", ("customer",), "service:shop/customer", "read"),
        ("get", ("customer",), "service:shop/customer", "read"),
        ("POST", ("customer",), "service:shop/customer", "create"),
        ("GET", ("customer", "julius@nyknicks.com"), "service:shop/customer", "read"),
        ("PATCH", ("customer", "julius@nyknicks.com"), "service:shop/customer", "update"),
        ("DELETE", ("customer", "julius@nyknicks.com"), "service:shop/customer", "delete"),
        ("GET", ("events", "1"), "service:shop/events", "read"),
        (
            "GET",
            ("queries", "daily_active_users"),
            "service:shop/queries/daily_active_users",
            "read",
        ),
    ],
)
def test_permission_for_each_endpoint(
    shop: Shop, method: str, path: tuple[str, ...], resource: str, action: str
) -> None:
    call = ServiceCall(method, path)

    assert shop.service.permission_for(call) == Permission(resource, action)


@pytest.mark.parametrize(
    ("method", "path", "refusal", "words"),
    [
        ("GET", ("nowhere",), NotFound, "/nowhere"),
        ("GET", (), NotFound, "no table or query"),
        ("GET", ("customer", "a", "b"), NotFound, "/customer/a/b"),
        ("GET", ("queries",), NotFound, "/queries"),
        ("GET", ("queries", "nope"), NotFound, "no query"),
        ("PUT", ("customer", "x"), MethodNotAllowed, "PUT"),
        ("DELETE", ("customer",), MethodNotAllowed, "DELETE"),
        ("PATCH", ("queries", "daily_active_users"), MethodNotAllowed, "PATCH"),
    ],
)
def test_refusals_before_any_query(
    shop: Shop,
    method: str,
    path: tuple[str, ...],
    refusal: type[ServiceBayError],
    words: str,
) -> None:
    call = ServiceCall(method, path)

    with pytest.raises(refusal) as decided:
        shop.service.permission_for(call)
    with pytest.raises(refusal) as handled:
        shop.run(shop.service.handle(call))

    assert words in decided.value.message
    assert handled.value.message == decided.value.message


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [("POST", ("events",), "create"), ("PATCH", ("events", "1"), "update"),
     ("DELETE", ("events", "1"), "delete")],
)  # fmt: skip
def test_an_operation_the_spec_does_not_offer_names_its_permission_and_is_refused_by_handle(
    shop: Shop, method: str, path: tuple[str, ...], action: str
) -> None:
    call = ServiceCall(method, path)

    permission = shop.service.permission_for(call)
    with pytest.raises(Forbidden) as handled:
        shop.run(shop.service.handle(call))

    assert permission == Permission("service:shop/events", action)
    assert f"does not allow {action} on events" in handled.value.message


def test_method_not_allowed_lists_what_is(shop: Shop) -> None:
    with pytest.raises(MethodNotAllowed) as item:
        shop.service.permission_for(ServiceCall("PUT", ("customer", "x")))
    with pytest.raises(MethodNotAllowed) as events:
        shop.service.permission_for(ServiceCall("PUT", ("events",)))

    assert item.value.status == 405
    assert item.value.headers() == {"Allow": "GET, PATCH, DELETE"}
    assert events.value.headers() == {"Allow": "GET"}


def test_name_and_description(shop: Shop) -> None:
    assert shop.service.name == "shop"
    assert shop.service.description == "The shop's customers, orders and events."
