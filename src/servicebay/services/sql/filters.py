"""List filters: `col=value` or `col=op.value`, as SQL conditions with bound values only.

The value after the operator is data, whatever it looks like: it is coerced to the
column's type and bound, so `eq.x' --` compares with the text `x' --`.
"""

from __future__ import annotations

import csv
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from servicebay.services.sql.schema import ColumnModel
from servicebay.services.sql.values import COMPARABLE, BadValue, Kind

OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is")
MAX_IN_ITEMS = 1000
_EQUALITY = COMPARABLE | {Kind.BOOLEAN}
_ALLOWED: dict[str, frozenset[Kind]] = {
    "eq": _EQUALITY,
    "neq": _EQUALITY,
    "in": _EQUALITY,
    "gt": COMPARABLE,
    "gte": COMPARABLE,
    "lt": COMPARABLE,
    "lte": COMPARABLE,
    "like": frozenset({Kind.STRING}),
    "ilike": frozenset({Kind.STRING}),
    "is": frozenset(Kind),
}
_RESERVED = frozenset(
    {"not", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj", "fts", "plfts", "phfts"}
    | {"wfts", "match", "imatch", "isdistinct", "all", "any", "or", "and"}
)
"""PostgREST's other operators: refused rather than taken for part of a value."""
_OPERATOR_SHAPE = re.compile(r"^[a-z]{1,12}$")
_IS = {"null": None, "true": True, "false": False}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True)
class Filter:
    """One filter, parsed and its value coerced; the SQL is built from its `shape` with a
    named bound parameter, so that lists filtered alike share one prepared statement."""

    column: ColumnModel
    op: str
    value: Any
    """The bound value (a list for `in`); for `is`, the constant, which is in the SQL."""

    @property
    def shape(self) -> tuple[str, str, Any]:
        return (self.column.name, self.op, self.value if self.op == "is" else None)

    def clause(self, name: str) -> sa.ColumnElement[bool]:
        target = self.column.column
        if self.op == "is":
            return target.is_(self.value)
        if self.op == "in":
            return target.in_(sa.bindparam(name, expanding=True, type_=target.type))
        if self.op in ("like", "ilike"):
            # An enum is compared as text: PostgreSQL has no LIKE on enum types.
            as_text = target if self.column.type.choices is None else sa.cast(target, sa.String)
            pattern = sa.bindparam(name, type_=as_text.type)
            return as_text.like(pattern) if self.op == "like" else as_text.ilike(pattern)
        result: sa.ColumnElement[bool] = _COMPARE[self.op](
            target, sa.bindparam(name, type_=target.type)
        )
        return result

    def parameters(self, name: str) -> dict[str, Any]:
        return {} if self.op == "is" else {name: self.value}


def condition(column: ColumnModel, text: str) -> Filter:
    """`text` is the filter as given: `value` (equality) or `op.value`.

    A word before the first dot is an operator when it is one; for a text column any
    other word is part of the value (`name=dr.who`), unless it is one of PostgREST's
    operators; for other columns it can only be a mistyped operator.
    """
    op, value = _split(column, text)
    if column.type.kind not in _ALLOWED[op]:
        raise BadValue(f"{op} does not apply to a {column.type.kind} column")
    if op == "is":
        return Filter(column, op, _is(column, value))
    if op == "in":
        return Filter(column, op, [column.type.from_text(item) for item in _items(value)])
    if op in ("like", "ilike"):
        if "\x00" in value:
            raise BadValue("may not contain a NUL character")
        return Filter(column, op, value.replace("*", "%"))
    return Filter(column, op, column.type.from_text(value))


def _split(column: ColumnModel, text: str) -> tuple[str, str]:
    head, dot, rest = text.partition(".")
    if dot and head in OPERATORS:
        return head, rest
    textual = column.type.kind is Kind.STRING
    if dot and _OPERATOR_SHAPE.match(head) and (head in _RESERVED or not textual):
        raise BadValue(
            f"unknown operator {head!r}: use one of {', '.join(OPERATORS)}"
            + (" (or eq.VALUE for a value containing a dot)" if textual else ""),
            "unknown_operator",
        )
    return "eq", text


def _is(column: ColumnModel, value: str) -> bool | None:
    if value not in _IS:
        raise BadValue("is takes null, true or false")
    if value != "null" and column.type.kind is not Kind.BOOLEAN:
        raise BadValue(f"is.{value} applies to boolean columns only")
    return _IS[value]


def _items(value: str) -> list[str]:
    """`(a,b,"c,d")`: items are separated by commas; double quotes protect commas."""
    if len(value) < 2 or value[0] != "(" or value[-1] != ")":
        raise BadValue("in takes a parenthesised list: in.(a,b,c)")
    inner = value[1:-1]
    if not inner:
        return []
    try:
        items = next(csv.reader([inner], strict=True))
    except csv.Error:
        raise BadValue("in takes a list of values separated by commas") from None
    if len(items) > MAX_IN_ITEMS:
        raise BadValue(f"in takes at most {MAX_IN_ITEMS} values")
    return items
