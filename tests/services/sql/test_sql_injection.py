"""An injection corpus against every place a request reaches SQL: filters (names, operators,
values), select, order, limit, cursor, keys, bodies, named query parameters and paths.

Whatever is sent, no data changes (every table's rows hash the same before and after), no
hidden value comes out, and no error carries SQL, driver text or the database's URL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from servicebay.core.errors import InvalidInput, NotFound, ServiceBayError
from servicebay.services.base import ServiceReply
from tests.services.sql.sql_support import Shop, assert_no_leak

VALUES = [
    "'; DROP TABLE customer; --",
    "1 OR 1=1",
    "1' OR '1'='1",
    "x' --",
    "eq.x' --",
    "in.(1);DELETE FROM customer",
    "in.(1,2) OR 1=1",
    "in.(1)) OR ((1=1",
    "1; DELETE FROM customer",
    "1); DROP TABLE orders; --",
    "gt.0 OR 1=1",
    "is.null; DROP TABLE customer",
    "is.null OR 1=1",
    "like.%' OR 'a'='a",
    "ilike.*') OR 1=1 --",
    "eq.1 UNION SELECT secret_note, 1, 1 FROM customer",
    "' || (SELECT secret_note FROM customer LIMIT 1) || '",
    "x /* comment */ OR 1=1",
    "-- comment",
    '" OR ""="',
    "`) OR 1=1 #",
    "$1",
    ":email",
    "%s",
    "?",
    "\\",
    "\\' OR 1=1 --",
    "x\x00y",
    "é' OR 1=1 --",
    "neq.' OR 1=1",
    "1e999",
    "NaN",
    "SLEEP(5)",
    "pg_sleep(5)",
    "2024-01-01'; DROP TABLE events; --",
]
NAMES = [
    "email; DROP TABLE customer",
    "email--",
    '"email"',
    "`email`",
    "[email]",
    "email,secret_note",
    "secret_note",
    "customer.email",
    "1=1",
    "(SELECT 1)",
    "email desc",
    "email.desc; DROP TABLE customer",
    "*",
    "",
    "EMAIL",
    "email\x00",
]
SECRET = "TOPSECRET"


@pytest.fixture
def seeded(shop: Shop, tag: str) -> list[dict[str, Any]]:
    """Customers with an order each, and a hidden note that must never come out."""
    rows = shop.customers(tag, 3, age=30, profile={"k": "v"}, born="1990-01-01")
    for row in rows:
        order = {"customer_id": row["id"], "amount": "5.00", "note": "first"}
        assert shop.call("POST", "orders", body=order).status == 201

    async def hide() -> None:
        table = shop.service.tables["customer"].table
        async with shop.service.engine.begin() as connection:
            where = table.c.email.like(f"{tag}-%")
            await connection.execute(sa.update(table).where(where).values(secret_note=SECRET))

    shop.run(hide())
    return rows


def _probe(shop: Shop, method: str, *path: str, sent: list[str], **request: Any) -> Any:
    """Call; an error must be a clean 400/404 without leaks, an answer must not show the
    hidden note. Answers the reply's body or the error."""
    try:
        reply: ServiceReply = shop.call(method, *path, **request)
    except (InvalidInput, NotFound) as error:
        assert_no_leak(error, shop.url, *sent, *path)
        return error
    except ServiceBayError as error:
        pytest.fail(f"{method} {path} {request} answered {error.status}: {error.message}")
    assert reply.status in (200, 201, 204)
    assert SECRET not in json.dumps(reply.body)
    return reply.body


def test_filter_values_are_only_ever_values(shop: Shop, seeded: Any) -> None:
    before = shop.fingerprint()
    columns = list(shop.service.tables["customer"].columns)
    for column in columns:
        for value in VALUES:
            for hostile in (value, f"in.({value})", f"in.(1,{value})"):
                _probe(shop, "GET", "customer", sent=[hostile, value], query={column: hostile})
    assert shop.fingerprint() == before


def test_a_quoted_value_matches_only_itself(shop: Shop, tag: str, seeded: Any) -> None:
    for value in ("x' OR '1'='1", f"{tag}-0@example.com' OR '1'='1", "' OR 1=1 --"):
        rows = shop.mine(tag, email=value)
        assert rows == []
        assert shop.mine(tag, name=f"eq.{value}") == []
    assert len(shop.mine(tag, email=f"in.({tag}-0@example.com,' OR 1=1)")) == 1


def test_hostile_names_are_refused(shop: Shop, seeded: Any) -> None:
    before = shop.fingerprint()
    for name in NAMES + VALUES:
        error = _probe(shop, "GET", "customer", sent=[name], query={name: "1"})
        assert isinstance(error, InvalidInput), name
        for control in ("select", "order"):
            error = _probe(shop, "GET", "customer", sent=[name], query={control: name})
            assert isinstance(error, InvalidInput), (control, name)
        error = _probe(shop, "GET", "customer", sent=[name], query={"order": f"email.{name}"})
        assert isinstance(error, InvalidInput), name
    assert shop.fingerprint() == before


def test_limit_and_cursor_take_no_sql(shop: Shop, seeded: Any) -> None:
    before = shop.fingerprint()
    for value in VALUES:
        for control in ("limit", "cursor"):
            error = _probe(shop, "GET", "customer", sent=[value], query={control: value})
            assert isinstance(error, InvalidInput)
    assert shop.fingerprint() == before


def test_keys_are_only_ever_values(shop: Shop, seeded: Any) -> None:
    before = shop.fingerprint()
    for value in VALUES + NAMES:
        for table in ("customer", "orders"):
            for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
                if table == "orders" and body:
                    body = {"note": "x"}
                error = _probe(shop, method, table, value, sent=[value], body=body)
                assert isinstance(error, InvalidInput | NotFound), (method, table, value)
    assert shop.fingerprint() == before


def test_bodies_store_text_verbatim_and_refuse_hostile_names(
    shop: Shop, tag: str, seeded: Any
) -> None:
    before = shop.fingerprint()
    for index, value in enumerate(value for value in VALUES if "\x00" not in value):
        email = f"{tag}-body-{index}@example.com"
        created = _probe(
            shop, "POST", "customer", sent=[value], body={"email": email, "name": value[:60]}
        )
        assert created["name"] == value[:60]
        patched = _probe(shop, "PATCH", "customer", email, sent=[value], body={"profile": value})
        assert patched["profile"] == value
        assert shop.call("DELETE", "customer", email).status == 204
        for column in ("age", "balance", "born", "active"):
            body = {"email": email, "name": "n", column: value}
            assert isinstance(
                _probe(shop, "POST", "customer", sent=[value], body=body), InvalidInput
            )
    for name in NAMES + VALUES:
        named: dict[str, Any] = {"email": f"{tag}-n@example.com", "name": "n", name: 1}
        assert isinstance(_probe(shop, "POST", "customer", sent=[name], body=named), InvalidInput)
        patch = _probe(
            shop, "PATCH", "customer", f"{tag}-0@example.com", sent=[name], body={name: 1}
        )
        assert isinstance(patch, InvalidInput)
    assert shop.fingerprint() == before


def test_query_parameters_and_paths_take_no_sql(shop: Shop, seeded: Any) -> None:
    before = shop.fingerprint()
    for value in VALUES + NAMES:
        for query in ({"day": value}, {"day": "2024-01-01", "user_below": value}, {value: "1"}):
            error = _probe(shop, "GET", "queries", "daily_active_users", sent=[value], query=query)
            assert isinstance(error, InvalidInput), query
        assert isinstance(_probe(shop, "GET", "queries", value, sent=[value]), NotFound)
        assert isinstance(_probe(shop, "GET", value, sent=[value]), NotFound)
        assert isinstance(_probe(shop, "GET", value, "1", sent=[value]), NotFound)
    assert shop.fingerprint() == before
