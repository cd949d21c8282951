"""Named, parameterised queries: the service owner's SQL, the caller's values bound.

The SQL runs in a transaction that is never committed (closing the connection rolls it
back): calling a named query needs only `read`, so it reads, whatever its text does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.services.base import ServiceReply
from servicebay.services.sql.errors import (
    FieldError,
    field_error,
    given_twice,
    invalid,
    translated,
    unknown_parameter,
)
from servicebay.services.sql.spec import QueryParam, QuerySpec, SqlServiceSpec
from servicebay.services.sql.values import BadValue, Kind, ValueType, plain_json

INTEGER_64 = ValueType(Kind.INTEGER, minimum=-(2**63), maximum=2**63 - 1)
PARAM_TYPES: dict[str, tuple[ValueType, sa.types.TypeEngine[Any]]] = {
    "string": (ValueType(Kind.STRING), sa.String()),
    "integer": (INTEGER_64, sa.BigInteger()),
    "number": (ValueType(Kind.FLOAT), sa.Float()),
    "boolean": (ValueType(Kind.BOOLEAN), sa.Boolean()),
    "date": (ValueType(Kind.DATE), sa.Date()),
    "datetime": (ValueType(Kind.DATETIME, timezone=True), sa.DateTime(timezone=True)),
}


@dataclass(frozen=True)
class NamedQuery:
    service: str
    name: str
    spec: QuerySpec
    statement: sa.TextClause
    defaults: dict[str, Any]

    def param_type(self, name: str) -> ValueType:
        return PARAM_TYPES[self.spec.params[name].type][0]

    async def run(self, engine: AsyncEngine, query: Sequence[tuple[str, str]]) -> ServiceReply:
        values = self._values(query)
        with translated(self.service):
            async with engine.connect() as connection:
                result = await connection.execute(self.statement, values)
                rows = result.mappings().all() if result.returns_rows else []
        data = [{str(key): plain_json(value) for key, value in row.items()} for row in rows]
        return ServiceReply(200, {"data": data, "next": None})

    def _values(self, query: Sequence[tuple[str, str]]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[FieldError] = []
        for name, text in query:
            if name not in self.spec.params:
                errors.append(unknown_parameter(name))
            elif name in values:
                errors.append(given_twice(name))
            else:
                try:
                    values[name] = self.param_type(name).from_text(text)
                except BadValue as error:
                    errors.append(field_error(["query", name], error))
                    values[name] = None
        for name, param in self.spec.params.items():
            if name in values:
                continue
            if _required(param):
                errors.append({"loc": ["query", name], "msg": "required", "type": "missing"})
            values[name] = self.defaults.get(name)
        if errors:
            raise invalid(errors)
        return values


def build_queries(spec: SqlServiceSpec) -> tuple[dict[str, NamedQuery], list[FieldError]]:
    """The named queries, and every mismatch between a query's SQL and its params.

    `:name` in the SQL is a parameter; `:name::type` is not (SQLAlchemy reads `::` as
    PostgreSQL's cast), so such a parameter shows up as declared but unused.
    """
    queries: dict[str, NamedQuery] = {}
    problems: list[FieldError] = []
    for name, query in spec.queries.items():
        loc = ["queries", name, "params"]
        clause = sa.text(query.sql)
        used = set(clause.compile().params)
        found = [
            {
                "loc": loc,
                "msg": f"the SQL uses :{param}, which params does not declare",
                "type": "value_error",
            }
            for param in sorted(used - set(query.params))
        ] + [
            {
                "loc": [*loc, param],
                "msg": f"the SQL never uses :{param} "
                f"(write CAST(:{param} AS type), not :{param}::type)",
                "type": "value_error",
            }
            for param in sorted(set(query.params) - used)
        ]
        defaults: dict[str, Any] = {}
        for param, declared in query.params.items():
            if declared.default is None:
                continue
            try:
                defaults[param] = PARAM_TYPES[declared.type][0].from_json(declared.default)
            except BadValue as error:
                found.append(field_error([*loc, param, "default"], error))
        problems += found
        if not found:
            binds = [
                sa.bindparam(param, type_=PARAM_TYPES[p.type][1])
                for param, p in query.params.items()
            ]
            queries[name] = NamedQuery(spec.name, name, query, clause.bindparams(*binds), defaults)
    return queries, problems


def _required(param: QueryParam) -> bool:
    return param.required and param.default is None
