"""SQLite's loose typing: declared types give affinities, and rows written by other
programs may hold anything. Such rows are shown as stored, never refused, and pages over
them stay consistent; what the service writes follows the declared affinity."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servicebay.core.errors import InvalidInput
from servicebay.services.base import ServiceCall
from servicebay.services.sql.service import SqlService
from servicebay.services.sql.spec import SqlServiceSpec

DDL = """
CREATE TABLE gadget (
    id INTEGER PRIMARY KEY,
    price MONEY,
    label STRING,
    title VARCHAR2(8),
    made DATETIME,
    day DATE,
    flag BOOLEAN,
    picture BLOB,
    anything,
    data JSON
)
"""
ROWS = [
    (
        1,
        9.5,
        "abc",
        "lamp",
        "2024-01-02T03:04:05",
        "2024-01-02",
        1,
        b"\x00\xff",
        "free",
        '{"a": 1}',
    ),
    (2, "cheap", 12, 7, "not a date", 20240102, "yes", "text", 3.5, "not json"),
    (3, None, None, None, "2024-01-02 03:04:05.000006", None, 0, None, None, "[1, 2]"),
    (4, 3, "x", "lamp", 17, "2024-13-45", 2, None, b"\x01", "null"),
]


@pytest.fixture
def gadgets(tmp_path: Path, runner: asyncio.Runner) -> Iterator[SqlService]:
    path = tmp_path / "loose.db"
    with sqlite3.connect(path) as connection:
        connection.execute(DDL)
        connection.executemany(f"INSERT INTO gadget VALUES ({', '.join('?' * 10)})", ROWS)
    spec = SqlServiceSpec.model_validate(
        {
            "name": "gadgets",
            "kind": "sql",
            "secret": "GADGETS_URL",
            "description": "Gadgets, typed loosely.",
            "tables": {"gadget": {"operations": ["read", "create"]}},
        }
    )
    service = runner.run(SqlService.connect(spec, f"sqlite:///{path}"))
    yield service
    runner.run(service.close())


def _get(runner: asyncio.Runner, service: SqlService, **query: str) -> Any:
    call = ServiceCall("GET", ("gadget",), list(query.items()))
    return runner.run(service.handle(call)).body


def test_rows_are_shown_as_stored(runner: asyncio.Runner, gadgets: SqlService) -> None:
    rows = {row["id"]: row for row in _get(runner, gadgets)["data"]}

    assert rows[1] == {
        "id": 1,
        "price": "9.5",
        "label": "abc",
        "title": "lamp",
        "made": "2024-01-02T03:04:05",
        "day": "2024-01-02",
        "flag": True,
        "picture": "AP8=",
        "anything": "free",
        "data": {"a": 1},
    }
    assert rows[2] == {
        "id": 2,
        "price": "cheap",
        "label": "12",
        "title": "7",
        "made": "not a date",
        "day": 20240102,
        "flag": "yes",
        "picture": "text",
        "anything": 3.5,
        "data": "not json",
    }
    assert rows[3]["made"] == "2024-01-02T03:04:05.000006"
    assert rows[3]["data"] == [1, 2]
    assert rows[4]["flag"] == 2
    assert rows[4]["made"] == 17
    assert rows[4]["day"] == "2024-13-45"
    assert rows[4]["anything"] == "AQ=="


@pytest.mark.parametrize("order", ["price", "price.desc", "made,day", "label.desc", "flag"])
def test_pages_over_mixed_values(runner: asyncio.Runner, gadgets: SqlService, order: str) -> None:
    everything = _get(runner, gadgets, order=order)["data"]
    paged: list[Any] = []
    cursor = None
    while True:
        page = _get(
            runner, gadgets, order=order, limit="1", **({"cursor": cursor} if cursor else {})
        )
        paged += page["data"]
        cursor = page["next"]
        if cursor is None:
            break

    assert paged == everything
    assert len(everything) == len(ROWS)


def test_writes_follow_the_declared_types(runner: asyncio.Runner, gadgets: SqlService) -> None:
    body = {
        "price": "12.5",
        "title": "desk",
        "made": "2024-05-06T07:08:09",
        "flag": False,
        "data": {"b": [2]},
    }

    created = runner.run(gadgets.handle(ServiceCall("POST", ("gadget",), body=body))).body

    assert created["price"] == "12.5"
    assert created["made"] == "2024-05-06T07:08:09"
    assert created["flag"] is False
    assert created["data"] == {"b": [2]}
    bad = {"title": "much too long", "anything": 1, "price": "cheap", "picture": "%%"}
    with pytest.raises(InvalidInput) as refused:
        runner.run(gadgets.handle(ServiceCall("POST", ("gadget",), body=bad)))
    assert sorted(item["loc"][-1] for item in refused.value.errors or []) == [
        "anything",
        "picture",
        "price",
        "title",
    ]
