"""A table's endpoints: list, get, create, update and delete rows.

Single rows are answered as bare objects (`GET /customer/{key}`, `PATCH`, a `POST` of an
object); lists as `{"data": [...], "next": ...}` (a `POST` of an array answers its rows
so, with `next` null). A `POST` of an array is one transaction: all rows or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from servicebay.core.errors import InvalidInput, NotFound
from servicebay.services.base import ServiceReply
from servicebay.services.sql import pagination, payload
from servicebay.services.sql.errors import field_error, invalid, translated, unknown_parameter
from servicebay.services.sql.listing import ListRequest, controls, parse_list, parse_select
from servicebay.services.sql.schema import ColumnModel, TableModel
from servicebay.services.sql.values import BadValue

Query = Sequence[tuple[str, str]]
PAGE_LIMIT = "page_limit"
MAX_LIST_SHAPES = 256
"""List statements kept per table; past it the cache starts over."""


@dataclass(frozen=True)
class TableEndpoints:
    service: str
    engine: AsyncEngine
    reads: AsyncEngine
    """`engine`'s pool, for single-statement reads (`engine.read_engine`)."""
    model: TableModel
    default_limit: int
    max_limit: int
    _lists: dict[tuple[Any, ...], sa.Select[Any]] = field(default_factory=dict, repr=False)
    """List statements by shape (`_list_statement`)."""

    async def list_rows(self, query: Query) -> ServiceReply:
        request = parse_list(self.model, query, self.default_limit, self.max_limit)
        statement = self._list_statement(request)
        if request.after is not None:
            statement = statement.where(pagination.after(request.sorts, request.after))
        parameters: dict[str, Any] = {PAGE_LIMIT: request.limit + 1}
        for position, given in enumerate(request.filters):
            parameters |= given.parameters(f"filter_{position}")
        with translated(self.service, self.model.table):
            async with self.reads.connect() as connection:
                rows = (await connection.execute(statement, parameters)).mappings().all()
        page = rows[: request.limit]
        following = (
            pagination.encode(request.sorts, page[-1]) if len(rows) > request.limit else None
        )
        return ServiceReply(
            200, {"data": [_shown(request.select, row) for row in page], "next": following}
        )

    async def get_row(self, key: str, query: Query) -> ServiceReply:
        given, errors = controls(query, ("select",))
        errors += [unknown_parameter(name) for name, _ in query if name != "select"]
        selected: list[ColumnModel] | None = None
        if "select" in given:
            try:
                selected = parse_select(self.model, given["select"])
            except BadValue as error:
                errors.append(field_error(["query", "select"], error))
        value = self._key(key, errors)
        with translated(self.service, self.model.table):
            async with self.reads.connect() as connection:
                if selected is None:
                    row = await self._read_by_key(connection, value)
                else:
                    row = await self._read(connection, self.model.key.column == value, selected)
        if row is None:
            raise self._missing(key)
        return ServiceReply(200, row)

    def _list_statement(self, request: ListRequest) -> sa.Select[Any]:
        """The first page's statement for lists shaped like `request` (same columns,
        filters and order; values bound at execution), built once per shape: executing
        the same statement object again skips SQLAlchemy's construction and cache-key
        work, which costs more than the query on a small page."""
        columns = _unique([*request.select, *(sort.column for sort in request.sorts)])
        shape = (
            tuple(column.name for column in columns),
            tuple(given.shape for given in request.filters),
            tuple(sort.label for sort in request.sorts),
        )
        statement = self._lists.get(shape)
        if statement is None:
            statement = (
                sa.select(*(column.read for column in columns))
                .select_from(self.model.table)
                .where(
                    *(
                        given.clause(f"filter_{position}")
                        for position, given in enumerate(request.filters)
                    )
                )
                .order_by(*pagination.order_by(request.sorts))
                .limit(sa.bindparam(PAGE_LIMIT, type_=sa.Integer))
            )
            if len(self._lists) >= MAX_LIST_SHAPES:
                self._lists.clear()
            self._lists[shape] = statement
        return statement

    @cached_property
    def _by_key(self) -> sa.Select[Any]:
        """The lookup of a whole row by key, built once: executing the same statement
        again skips SQLAlchemy's per-statement cache-key work on the hottest endpoint."""
        key = self.model.key.column
        columns = self.model.columns.values()
        return sa.select(*(column.read for column in columns)).where(
            key == sa.bindparam("key_value", type_=key.type)
        )

    async def _read_by_key(self, connection: AsyncConnection, value: Any) -> dict[str, Any] | None:
        found = (await connection.execute(self._by_key, {"key_value": value})).mappings().first()
        return None if found is None else _shown(list(self.model.columns.values()), found)

    async def create_rows(self, body: Any, query: Query) -> ServiceReply:
        _no_parameters(query)
        rows, many = payload.rows_to_create(self.model, body, self.max_limit)
        with translated(self.service, self.model.table):
            async with self.engine.begin() as connection:
                created = await self._insert(connection, rows)
        shown = [_shown(list(self.model.columns.values()), row) for row in created]
        return ServiceReply(201, {"data": shown, "next": None} if many else shown[0])

    async def update_row(self, key: str, body: Any, query: Query) -> ServiceReply:
        errors = [unknown_parameter(name) for name, _ in query]
        try:
            changes = payload.changes(self.model, body)
        except InvalidInput as error:
            errors += error.errors or []
        value = self._key(key, errors)
        where = self.model.key.column == value
        with translated(self.service, self.model.table):
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    sa.update(self.model.table).where(where).values(changes)
                )
                if result.rowcount == 0:
                    raise self._missing(key)
                new_key = changes.get(self.model.key.name, value)
                row = await self._read(connection, self.model.key.column == new_key)
        return ServiceReply(200, row)

    async def delete_row(self, key: str, query: Query) -> ServiceReply:
        _no_parameters(query)
        value = self._key(key, [])
        with translated(self.service, self.model.table, deleting=True):
            async with self.engine.begin() as connection:
                where = self.model.key.column == value
                result = await connection.execute(sa.delete(self.model.table).where(where))
        if result.rowcount == 0:
            raise self._missing(key)
        return ServiceReply(204)

    def _key(self, text: str, errors: list[dict[str, Any]]) -> Any:
        """The key from the path as the key column's type; raises with it any `errors`
        found before, so that one 400 lists them all."""
        value = None
        try:
            value = self.model.key.type.from_text(text)
        except BadValue as error:
            errors.append(field_error(["path", self.model.key.name], error))
        if errors:
            raise invalid(errors)
        return value

    def _missing(self, key: str) -> NotFound:
        shown = key if len(key) <= 100 else key[:100] + "..."
        return NotFound(f"{self.model.name} has no row whose {self.model.key.name} is {shown!r}")

    async def _read(
        self,
        connection: AsyncConnection,
        where: sa.ColumnElement[bool],
        columns: list[ColumnModel] | None = None,
    ) -> dict[str, Any] | None:
        shown = columns or list(self.model.columns.values())
        statement = sa.select(*(column.read for column in shown)).where(where)
        row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _shown(shown, row)

    async def _insert(
        self, connection: AsyncConnection, rows: list[payload.Row]
    ) -> list[sa.RowMapping]:
        """With RETURNING, rows sharing columns go in one statement (one per run of such
        rows); without it (MySQL), each row is inserted and read back by primary key."""
        table = self.model.table
        reads = [column.read for column in self.model.columns.values()]
        created: list[sa.RowMapping] = []
        if connection.dialect.insert_executemany_returning_sort_by_parameter_order:
            for _, run in groupby(rows, key=_column_names):
                statement = sa.insert(table).returning(*reads, sort_by_parameter_order=True)
                batch = list(run)
                if batch[0]:
                    created += (await connection.execute(statement, batch)).mappings().all()
                else:  # rows of defaults only: no columns to send in a batch
                    for _ in batch:
                        result = await connection.execute(statement.values({}))
                        created += result.mappings().all()
            return created
        for row in rows:
            result = await connection.execute(sa.insert(table).values(row))
            primary = dict(
                zip(table.primary_key.columns, result.inserted_primary_key or (), strict=False)
            )
            where = sa.and_(*(column == value for column, value in primary.items()))
            created += (await connection.execute(sa.select(*reads).where(where))).mappings().all()
        return created


def _shown(columns: list[ColumnModel], row: sa.RowMapping) -> dict[str, Any]:
    return {column.name: column.show(row[column.name]) for column in columns}


def _column_names(row: payload.Row) -> tuple[str, ...]:
    return tuple(row)


def _unique(columns: list[ColumnModel]) -> list[ColumnModel]:
    return list({column.name: column for column in columns}.values())


def _no_parameters(query: Query) -> None:
    if query:
        raise invalid([unknown_parameter(name) for name, _ in query])
