"""Connecting: the spec checked against the database, every mismatch named at once; an
unreachable database refused without a word of its URL; `"*"`; inserts without RETURNING."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from servicebay.core.errors import ConfigurationError, Conflict, InvalidInput
from servicebay.services.base import ServiceCall
from servicebay.services.sql.engine import async_url
from servicebay.services.sql.service import SqlService
from tests.services.sql.sql_support import Shop, assert_no_leak, locs, shop_spec


def _refused(shop: Shop, **spec: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        shop.run(SqlService.connect(shop_spec(**spec), shop.url))
    return caught.value


def test_every_mismatch_between_spec_and_database_is_named(shop: Shop) -> None:
    error = _refused(
        shop,
        tables={
            "customers": {},
            "customer": {
                "key": "name",
                "columns": ["email", "name", "shoe_size"],
                "read only": ["tier", "colour"],
                "hidden": ["email"],
            },
            "orders": {"key": "nope", "operations": ["read", "create"], "hidden": ["amount"]},
            "events": {"key": "user_id"},
        },
        queries={
            "q": {"sql": "SELECT :a + :b AS total", "params": {"a": "integer", "c": "integer"}},
            "d": {"sql": "SELECT :a AS a", "params": {"a": {"type": "date", "default": "soon"}}},
        },
    )

    assert locs(error) == [
        ["tables", "customers"],
        ["tables", "customer", "columns", 2],
        ["tables", "customer", "read_only", 1],
        ["tables", "customer", "key"],
        ["tables", "orders", "key"],
        ["tables", "orders", "operations"],
        ["tables", "events", "key"],
        ["queries", "q", "params"],
        ["queries", "q", "params", "c"],
        ["queries", "d", "params", "a", "default"],
    ]
    messages = [item["msg"] for item in error.errors or []]
    assert "no table 'customers'" in messages[0]
    assert "not unique" in messages[3]
    assert "'amount'" in messages[5]
    assert ":b" in messages[7]
    assert "CAST(:c AS type)" in messages[8]
    assert "'customers'" in error.message


def test_a_hidden_key_is_refused(shop: Shop) -> None:
    error = _refused(shop, tables={"customer": {"key": "email", "hidden": ["email"]}})

    assert "must be exposed, not hidden" in str(error.errors)


def test_all_tables(shop: Shop, tag: str) -> None:
    """`"*"` serves every table that has a single-column key, read-only."""

    async def add_a_table_without_key() -> None:
        async with shop.service.engine.begin() as connection:
            await connection.execute(sa.text(f"CREATE TABLE nokey_{tag} (message VARCHAR(10))"))

    shop.run(add_a_table_without_key())
    shop.customers(tag, 1)
    service = shop.run(SqlService.connect(shop_spec(tables="*", queries={}), shop.url))
    try:
        assert {"customer", "orders", "events"} <= set(service.tables)
        assert f"nokey_{tag}" not in service.tables
        assert service.tables["customer"].key.name == "id"
        listed = shop.run(service.handle(ServiceCall("GET", ("customer",), [("limit", "1")])))
        assert "secret_note" in listed.body["data"][0]
        assert service.permission_for(ServiceCall("GET", ("orders", "1"))).action == "read"
    finally:
        shop.run(service.close())


@pytest.fixture
def without_returning(shop: Shop) -> Iterator[SqlService]:
    """The shop as MySQL (not MariaDB) serves it: no INSERT ... RETURNING."""
    service = shop.run(SqlService.connect(shop_spec(), shop.url))
    service.engine.sync_engine.dialect.insert_executemany_returning_sort_by_parameter_order = False
    yield service
    shop.run(service.close())


def test_inserts_without_returning_read_rows_back(
    shop: Shop, tag: str, without_returning: SqlService
) -> None:
    body = [
        {"email": f"{tag}-{index}@example.com", "name": f"N{index}", "age": index}
        for index in range(3)
    ]
    call = ServiceCall("POST", ("customer",), body=body)

    created = shop.run(without_returning.handle(call)).body["data"]

    assert [row["email"] for row in created] == [row["email"] for row in body]
    assert [row["age"] for row in created] == [0, 1, 2]
    assert all(row["balance"] == "0.00" and row["tier"] == "basic" for row in created)
    assert created == shop.mine(tag)
    body.append({"email": f"{tag}-0@example.com", "name": "again"})
    with pytest.raises(Conflict):
        shop.run(without_returning.handle(ServiceCall("POST", ("customer",), body=body[1:])))
    assert len(shop.mine(tag)) == 3


UNREACHABLE = [
    "postgresql://bob:hunter2secret@127.0.0.1:5432/shop?unknown_option=1",
    "mysql://bob:hunter2secret@127.0.0.1:3306/shop?unknown_option=1",
    "postgresql://bob:hunter2secret@127.0.0.1:1/shop",
    "postgresql+psycopg2://bob:hunter2secret@127.0.0.1:1/shop",
    "mysql://bob:hunter2secret@127.0.0.1:1/shop",
    "mariadb+pymysql://bob:hunter2secret@127.0.0.1:1/shop",
    "sqlite:////nonexistent-hunter2secret/shop.db",
]


@pytest.mark.parametrize("url", UNREACHABLE)
def test_an_unreachable_database_is_a_configuration_error_without_its_url(
    runner: asyncio.Runner, url: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        runner.run(_connect(url))

    assert "shop" in caught.value.message
    assert "hunter2secret" not in caught.value.message
    assert_no_leak(caught.value, url)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///shop.db", "sqlite+aiosqlite:///shop.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
        ("mysql+pymysql://u@h/db", "mysql+asyncmy://u@h/db"),
        ("mariadb://u@h/db", "mariadb+asyncmy://u@h/db"),
    ],
)
def test_each_backend_gets_its_async_driver(given: str, used: str) -> None:
    assert async_url(given, "shop").render_as_string() == used


def test_a_missing_database_on_a_live_server(shop: Shop) -> None:
    url = sa.engine.make_url(shop.url)
    if shop.backend == "sqlite":
        missing = url.set(database="/nonexistent-hunter2secret/x.db")
    else:
        missing = url.set(database="no_such_database_hunter2secret", password="hunter2secret")
    rendered = missing.render_as_string(hide_password=False)

    with pytest.raises(ConfigurationError) as caught:
        shop.run(_connect(rendered))

    assert "hunter2secret" not in caught.value.message
    assert_no_leak(caught.value, rendered)


@pytest.mark.parametrize("url", ["not a url", "oracle://scott:tiger@db/orcl", ""])
def test_urls_of_no_supported_database(runner: asyncio.Runner, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        runner.run(_connect(url))

    assert "tiger" not in caught.value.message


async def _connect(url: str) -> None:
    """On the tests' loop, which outlives aiosqlite's thread finishing a failed connect."""
    service = await SqlService.connect(shop_spec(), url)
    await service.close()
