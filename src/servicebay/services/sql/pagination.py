"""Ordering and keyset pagination that stays correct while rows are inserted.

A list is ordered by the requested columns and then, unless one of them is already unique
and not null, by the table's key (which is), so the order is total. The cursor holds the
last row's values of those columns; the next page is the rows strictly after them. NULLs
sort last ascending and first descending on every backend (PostgreSQL's rule), spelt out
in SQL rather than left to each database's default.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from servicebay.core.pagination import decode_cursor, encode_cursor, invalid_cursor
from servicebay.services.sql.schema import ColumnModel, TableModel
from servicebay.services.sql.values import SORTABLE, BadValue

_DIRECTIONS = {"asc": False, "desc": True}


@dataclass(frozen=True)
class Sort:
    column: ColumnModel
    descending: bool

    @property
    def label(self) -> str:
        return f"{self.column.name}.{'desc' if self.descending else 'asc'}"


def parse_order(table: TableModel, text: str | None) -> list[Sort]:
    """`a.desc,b` as sorts, ending with the key unless a unique, not-null column is among
    them; raises BadValue naming the first problem."""
    sorts: list[Sort] = []
    for item in text.split(",") if text is not None else []:
        name, dot, direction = item.partition(".")
        column = table.column(name)
        if column is None:
            raise BadValue("unknown column in order", "unknown_column")
        if column.type.kind not in SORTABLE:
            raise BadValue(f"a {column.type.kind} column cannot be ordered by")
        if dot and direction not in _DIRECTIONS:
            raise BadValue("a direction is asc or desc: order=col.desc")
        if all(sort.column is not column for sort in sorts):
            sorts.append(Sort(column, _DIRECTIONS.get(direction, False)))
    if all(sort.column.name not in table.distinct and sort.column is not table.key
           for sort in sorts):  # fmt: skip
        sorts.append(Sort(table.key, False))
    return sorts


def order_by(sorts: Sequence[Sort]) -> list[sa.ColumnElement[Any]]:
    clauses: list[sa.ColumnElement[Any]] = []
    for sort in sorts:
        expression = sort.column.read
        if sort.column.nullable:
            nulls = expression.is_(None)
            clauses.append(nulls.desc() if sort.descending else nulls.asc())
        clauses.append(expression.desc() if sort.descending else expression.asc())
    return clauses


def after(sorts: Sequence[Sort], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows strictly after `values` in the order of `sorts`: for each sort column, the
    rows tied on every column before it and beyond it on this one."""
    branches: list[sa.ColumnElement[bool]] = []
    ties: list[sa.ColumnElement[bool]] = []
    for sort, value in zip(sorts, values, strict=True):
        expression = sort.column.read
        beyond: sa.ColumnElement[bool]
        tie: sa.ColumnElement[bool]
        if value is None:
            beyond = expression.is_not(None) if sort.descending else sa.false()
            tie = expression.is_(None)
        else:
            # A bound parameter, not the bare value: SQLAlchemy takes `< True` for a mistake.
            bound = sa.bindparam(None, value, type_=expression.type)
            beyond = expression < bound if sort.descending else expression > bound
            if sort.column.nullable and not sort.descending:
                beyond = sa.or_(beyond, expression.is_(None))
            tie = expression == bound
        branches.append(sa.and_(*ties, beyond))
        ties.append(tie)
    return sa.or_(*branches)


def encode(sorts: Sequence[Sort], row: sa.RowMapping) -> str:
    """The cursor after `row`: the order it belongs to and the row's values in it."""
    values = [_cursor_value(sort.column, row[sort.column.name]) for sort in sorts]
    position = json.dumps({"order": [sort.label for sort in sorts], "after": values})
    return encode_cursor(position)


def decode(sorts: Sequence[Sort], cursor: str) -> list[Any]:
    """The values a cursor holds, as bindable values; InvalidInput if it is not one this
    order handed out (a cursor is only valid with the order it was made for)."""
    position = decode_cursor(cursor)
    try:
        content = json.loads(position or "")
        if content["order"] != [sort.label for sort in sorts]:
            raise ValueError("another order")
        stored = content["after"]
        if not isinstance(stored, list) or len(stored) != len(sorts):
            raise ValueError("wrong length")
        return [_bound_value(sort.column, value) for sort, value in zip(sorts, stored, strict=True)]
    except (ValueError, KeyError, TypeError):
        raise invalid_cursor() from None


def _cursor_value(column: ColumnModel, value: Any) -> Any:
    """Raw values (SQLite) are kept as stored, so the next page compares like with like."""
    if not column.raw:
        return column.type.to_json(value)
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return value


def _bound_value(column: ColumnModel, value: Any) -> Any:
    if value is None:
        return None
    if column.raw:
        if isinstance(value, dict):
            return base64.b64decode(value["base64"], validate=True)
        if isinstance(value, list):
            raise ValueError("not a stored value")
        return value
    try:
        return column.type.from_json(value)
    except BadValue as error:
        raise ValueError(error.message) from None
