"""Named queries: parameters coerced to their declared types, bound, and run read-only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from servicebay.core.errors import ConfigurationError, InvalidInput, MethodNotAllowed, NotFound
from servicebay.services.base import ServiceCall
from servicebay.services.sql.service import SqlService
from tests.services.sql.sql_support import Shop, assert_no_leak, locs, shop_spec


@pytest.fixture
def day(shop: Shop, tag: str) -> dt.date:
    """A day of this test's own, with users 1, 2, 2, 3 and 2_000_000 active on it."""
    chosen = dt.date(1900, 1, 1) + dt.timedelta(days=int(tag[1:], 16) % 40_000)
    moments = [dt.datetime.combine(chosen, dt.time(hour)) for hour in (1, 5, 9, 13, 23)]
    users = [1, 2, 2, 3, 2_000_000]
    rows = [{"user_id": user, "occurred_at": at} for user, at in zip(users, moments, strict=True)]
    rows.append({"user_id": 9, "occurred_at": moments[0] + dt.timedelta(days=1)})

    async def insert() -> None:
        async with shop.service.engine.begin() as connection:
            await connection.execute(sa.insert(shop.service.tables["events"].table), rows)

    shop.run(insert())
    return chosen


def test_query_answers_its_rows(shop: Shop, day: dt.date) -> None:
    reply = shop.call("GET", "queries", "daily_active_users", query={"day": day.isoformat()})

    assert reply.status == 200
    assert reply.body == {"data": [{"users": 3, "events": 4}], "next": None}


def test_optional_parameter_overrides_its_default(shop: Shop, day: dt.date) -> None:
    query = {"day": day.isoformat(), "user_below": "3"}

    body = shop.call("GET", "queries", "daily_active_users", query=query).body

    assert body["data"] == [{"users": 2, "events": 3}]


def test_every_parameter_problem_is_listed(shop: Shop) -> None:
    error = shop.refused(
        "GET",
        "queries",
        "daily_active_users",
        query=[("user_below", "many"), ("week", "1"), ("user_below", "2")],
    )

    assert isinstance(error, InvalidInput)
    assert locs(error) == [
        ["query", "user_below"],
        ["query", "week"],
        ["query", "user_below"],
        ["query", "day"],
    ]
    assert [item["type"] for item in error.errors or []][-1] == "missing"


@pytest.mark.parametrize("value", ["2024-02-30", "yesterday", "2024-01-01T00:00:00", ""])
def test_parameters_are_coerced_to_their_types(shop: Shop, value: str) -> None:
    error = shop.refused("GET", "queries", "daily_active_users", query={"day": value})

    assert locs(error) == [["query", "day"]]


def test_unknown_query_and_methods(shop: Shop) -> None:
    assert isinstance(shop.refused("GET", "queries", "weekly"), NotFound)
    assert isinstance(shop.refused("GET", "queries"), NotFound)
    refused = shop.refused("POST", "queries", "daily_active_users")
    assert isinstance(refused, MethodNotAllowed)
    assert refused.headers() == {"Allow": "GET"}


@pytest.fixture
def odd(shop: Shop) -> Iterator[SqlService]:
    """The shop with a query that fails in the database and one that writes."""
    queries = {
        "broken": {
            "sql": "SELECT missing_column FROM events WHERE id = :id",
            "params": {"id": "integer"},
        },
        "purge": {"sql": "DELETE FROM events WHERE user_id = :user", "params": {"user": "integer"}},
        "typed": {
            "sql": "SELECT :when AS at_time, :ok AS ok, :ratio AS ratio, :label AS label",
            "params": {"when": "datetime", "ok": "boolean", "ratio": "number", "label": "string"},
        },
    }
    service = shop.run(SqlService.connect(shop_spec(queries=queries), shop.url))
    yield service
    shop.run(service.close())


def _call(shop: Shop, service: SqlService, name: str, query: dict[str, str]) -> Any:
    return shop.run(service.handle(ServiceCall("GET", ("queries", name), list(query.items()))))


def test_a_failing_query_says_so_without_its_sql(shop: Shop, odd: SqlService) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _call(shop, odd, "broken", {"id": "1"})

    assert "shop" in caught.value.message
    assert_no_leak(caught.value, shop.url)
    assert "missing_column" not in caught.value.message


def test_a_query_that_writes_is_rolled_back(shop: Shop, odd: SqlService, day: dt.date) -> None:
    before = shop.fingerprint()

    _call(shop, odd, "purge", {"user": "2"})

    assert shop.fingerprint() == before


def test_parameter_types_bind(shop: Shop, odd: SqlService) -> None:
    query = {"when": "2024-05-06T07:08:09Z", "ok": "true", "ratio": "0.25", "label": "x' --"}

    [row] = _call(shop, odd, "typed", query).body["data"]

    assert row["label"] == "x' --"
    assert row["ratio"] == pytest.approx(0.25)
    assert row["ok"] in (True, 1)
    assert "2024-05-06" in row["at_time"]
