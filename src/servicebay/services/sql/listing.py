"""What a list request asks for, read from its query string, with every problem reported.

Parameters are `select`, `order`, `limit`, `cursor`, and otherwise a column name with a
filter. A limit above the service's maximum is refused rather than clamped: a caller
that asked for more than it gets would take a short page for the end of the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from servicebay.core.errors import InvalidInput
from servicebay.services.sql.errors import FieldError, field_error, given_twice, invalid
from servicebay.services.sql.filters import Filter, condition
from servicebay.services.sql.pagination import Sort, decode, parse_order
from servicebay.services.sql.schema import ColumnModel, TableModel
from servicebay.services.sql.values import BadValue

CONTROLS = ("select", "order", "limit", "cursor")


@dataclass(frozen=True)
class ListRequest:
    filters: list[Filter]
    select: list[ColumnModel]
    sorts: list[Sort]
    limit: int
    after: list[Any] | None


def controls(
    query: Sequence[tuple[str, str]], allowed: Sequence[str]
) -> tuple[dict[str, str], list[FieldError]]:
    """The control parameters among `allowed`, each given at most once; other names are
    the caller's to judge (filters on a list, unknown parameters elsewhere)."""
    found: dict[str, str] = {}
    errors: list[FieldError] = []
    for name, value in query:
        if name not in allowed:
            continue
        if name in found:
            errors.append(given_twice(name))
        found[name] = value
    return found, errors


def parse_select(table: TableModel, text: str | None) -> list[ColumnModel]:
    if text is None:
        return list(table.columns.values())
    selected: list[ColumnModel] = []
    for name in text.split(","):
        column = table.column(name)
        if column is None:
            raise BadValue("unknown column in select", "unknown_column")
        if column not in selected:
            selected.append(column)
    return selected


def parse_list(
    table: TableModel, query: Sequence[tuple[str, str]], default_limit: int, max_limit: int
) -> ListRequest:
    given, errors = controls(query, CONTROLS)
    filters: list[Filter] = []
    for name, value in query:
        if name in CONTROLS:
            continue
        column = table.column(name)
        if column is None:
            errors.append(
                {"loc": ["query", name], "msg": "unknown column", "type": "unknown_column"}
            )
            continue
        try:
            filters.append(condition(column, value))
        except BadValue as error:
            errors.append(field_error(["query", name], error))
    select: list[ColumnModel] = []
    sorts: list[Sort] = []
    try:
        select = parse_select(table, given.get("select"))
    except BadValue as error:
        errors.append(field_error(["query", "select"], error))
    try:
        sorts = parse_order(table, given.get("order"))
    except BadValue as error:
        errors.append(field_error(["query", "order"], error))
    limit = _limit(given.get("limit"), min(default_limit, max_limit), max_limit, errors)
    after = None
    if given.get("cursor"):
        try:
            after = decode(sorts, given["cursor"])
        except InvalidInput as error:
            errors.extend(error.errors or [])
    if errors:
        raise invalid(errors)
    return ListRequest(filters, select, sorts, limit, after)


def _limit(text: str | None, default: int, maximum: int, errors: list[FieldError]) -> int:
    if text is None:
        return default
    if text.isascii() and text.isdigit() and len(text) < 10 and 1 <= int(text) <= maximum:
        return int(text)
    errors.append(
        {
            "loc": ["query", "limit"],
            "msg": f"must be a whole number from 1 to {maximum}",
            "type": "value_error",
        }
    )
    return default
