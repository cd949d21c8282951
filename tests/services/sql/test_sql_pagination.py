"""Keyset pagination: every row once, in order, while rows are being inserted."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from servicebay.core.errors import InvalidInput
from tests.services.sql.sql_support import Shop, locs


def _pages(shop: Shop, tag: str, limit: int, between: Any = None, **query: str) -> list[Any]:
    """Every page's rows, following `next`; `between(page_number)` runs after each page."""
    rows: list[dict[str, Any]] = []
    cursor = None
    for number in range(1000):
        extra: dict[str, str] = {"cursor": cursor} if cursor else {}
        reply = shop.call(
            "GET",
            "customer",
            query={"email": f"like.{tag}-*", "limit": str(limit), **query, **extra},
        )
        rows += reply.body["data"]
        cursor = reply.body["next"]
        if cursor is None:
            return rows
        assert len(reply.body["data"]) == limit
        if between:
            between(number)
    raise AssertionError("pagination never ended")


def _varied(shop: Shop, tag: str, count: int, start: int = 0) -> None:
    """Customers with ties, NULLs and every sortable type."""
    rows = [
        {
            "email": f"{tag}-{index:03d}@example.com",
            "name": f"N{index % 4}",
            "age": None if index % 3 == 0 else index % 5,
            "balance": str(index % 4),
            "score": None if index % 4 == 0 else index / 7,
            "active": index % 2 == 0,
            "born": f"2000-01-{index % 3 + 1:02d}",
            "wakes_at": f"0{index % 3}:00:00",
        }
        for index in range(start, start + count)
    ]
    assert shop.call("POST", "customer", body=rows).status == 201


@pytest.mark.parametrize(
    "order",
    [
        None,
        "age",
        "age.desc",
        "name.desc,age",
        "balance",
        "score.desc",
        "score",
        "active.desc,born",
        "born.desc,wakes_at",
        "created_at",
        "email.desc",
        "id.desc",
        "name,id",
    ],
)
def test_pages_match_one_long_list(shop: Shop, tag: str, order: str | None) -> None:
    _varied(shop, tag, 23)
    query = {"order": order} if order else {}

    everything = shop.mine(tag, limit="50", **query)
    paged = _pages(shop, tag, 4, **query)

    assert len(everything) == 23
    assert paged == everything


def test_nulls_sort_last_ascending_first_descending(shop: Shop, tag: str) -> None:
    _varied(shop, tag, 6)

    assert [row["age"] for row in shop.mine(tag, order="age")] == [0, 1, 2, 4, None, None]
    assert [row["age"] for row in shop.mine(tag, order="age.desc")] == [None, None, 4, 2, 1, 0]


def test_pages_stay_correct_while_rows_are_inserted(shop: Shop, tag: str) -> None:
    """Rows added mid-way, before and after the reader's position: each row that existed
    at the start is read exactly once, and the pages stay in order."""
    _varied(shop, tag, 12)
    original = {row["email"] for row in shop.mine(tag, limit="50")}
    added = iter(range(100, 200, 4))

    def insert(_: int) -> None:
        _varied(shop, tag, 4, start=next(added))

    paged = _pages(shop, tag, 3, between=insert, order="age.desc,name")
    final = shop.mine(tag, limit="50", order="age.desc,name")

    emails = [row["email"] for row in paged]
    assert len(emails) == len(set(emails))
    assert original <= set(emails)
    positions = [[row["email"] for row in final].index(email) for email in emails]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("order", "ordered_by"),
    [
        ("name", ["name.asc", "email.asc"]),
        ("id.desc", ["id.desc"]),
        ("name,id", ["name.asc", "id.asc"]),
    ],
)
def test_the_key_breaks_ties_only_when_no_ordered_column_is_unique(
    shop: Shop, tag: str, order: str, ordered_by: list[str]
) -> None:
    """`id` is the primary key: ordering by it is already total, and adding the key
    (`email`) after it would stop the database from using id's index for the order."""
    _varied(shop, tag, 3)
    query = {"email": f"like.{tag}-*", "limit": "1", "order": order}

    cursor = shop.call("GET", "customer", query=query).body["next"]

    assert json.loads(base64.urlsafe_b64decode(cursor + "==="))["order"] == ordered_by


def test_a_cursor_only_works_with_its_order(shop: Shop, tag: str) -> None:
    _varied(shop, tag, 5)
    cursor = shop.call(
        "GET", "customer", query={"email": f"like.{tag}-*", "limit": "2", "order": "age"}
    ).body["next"]

    error = shop.refused("GET", "customer", query={"cursor": cursor, "order": "name"})

    assert isinstance(error, InvalidInput)
    assert locs(error) == [["query", "cursor"]]
    assert shop.call("GET", "customer", query={"cursor": cursor, "order": "age"}).status == 200


def _forged(content: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(content).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "!!!!",
        _forged("just text"),
        _forged({"order": ["email.asc"]}),
        _forged({"order": ["email.asc"], "after": []}),
        _forged({"order": ["email.asc"], "after": ["a", "b"]}),
        _forged({"order": ["id.asc"], "after": [1]}),
        _forged({"order": ["email.asc"], "after": [[1]]}),
        _forged({"order": ["email.asc"], "after": [{"base64": "@@"}]}),
    ],
)
def test_forged_cursors_are_refused(shop: Shop, cursor: str) -> None:
    error = shop.refused("GET", "customer", query={"cursor": cursor})

    assert isinstance(error, InvalidInput)
    assert locs(error) == [["query", "cursor"]]
