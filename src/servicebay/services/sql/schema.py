"""The database's reflected tables, checked against the spec, as the model every request uses.

Requests name columns only by looking them up here: an identifier that reaches SQL is
always a reflected `Column`, never text from a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import NullType

from servicebay.services.sql.errors import FieldError
from servicebay.services.sql.spec import IDENTIFIER, SqlServiceSpec, TableSpec
from servicebay.services.sql.typemap import value_type
from servicebay.services.sql.values import COMPARABLE, ValueType

_MARIADB_JSON = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = DATABASE() AND LEVEL = 'Column' "
    "AND CHECK_CLAUSE LIKE 'json_valid(%'"
)


@dataclass(frozen=True)
class ColumnModel:
    name: str
    column: sa.Column[Any]
    type: ValueType
    nullable: bool
    required: bool
    """Creating a row must give it: NOT NULL, without a default, not generated."""
    writable: bool
    read: sa.ColumnElement[Any]
    """How the column is selected, ordered and compared with cursors: as stored on SQLite,
    whose values need not match the declared type; through the column's type elsewhere."""
    raw: bool
    description: str | None

    def show(self, value: Any) -> Any:
        """A value of this column, as read, as JSON."""
        return self.type.to_json(value, raw=self.raw)


@dataclass(frozen=True)
class TableModel:
    name: str
    table: sa.Table
    description: str | None
    operations: frozenset[str]
    columns: dict[str, ColumnModel]
    """The visible columns (exposed, not hidden), in the table's order."""
    key: ColumnModel
    distinct: frozenset[str] = frozenset()
    """Visible columns that are unique on their own and NOT NULL: ordering by any of them
    is already total, so a list need not add the key (which would stop an index on that
    column from serving the order)."""

    def column(self, name: str) -> ColumnModel | None:
        return self.columns.get(name)


@dataclass
class Reflected:
    metadata: sa.MetaData
    dialect: str
    unique: dict[str, set[str]] = field(default_factory=dict)
    """Per table, the columns that are unique on their own (primary key, unique constraint
    or unique index): the only ones that may serve as a lookup key."""


def reflect(connection: sa.Connection, names: Sequence[str] | None) -> Reflected:
    """Reflect the tables the spec names (`None`: all of them). Runs in `run_sync`."""
    inspector = sa.inspect(connection)
    present = {str(name) for name in inspector.get_table_names()}
    wanted = sorted(present if names is None else present.intersection(names))
    metadata = sa.MetaData()
    metadata.reflect(connection, only=wanted)
    reflected = Reflected(metadata, connection.dialect.name)
    for name in wanted:
        reflected.unique[name] = _unique_columns(inspector, metadata.tables[name])
    _mark_json(connection, metadata)
    return reflected


def _unique_columns(inspector: sa.Inspector, table: sa.Table) -> set[str]:
    groups: list[Sequence[Any]] = [[column.name for column in table.primary_key.columns]]
    groups += [u["column_names"] for u in inspector.get_unique_constraints(table.name)]
    # SQLite's inline `UNIQUE` shows up only as an automatic index.
    options: dict[str, Any] = (
        {"include_auto_indexes": True} if inspector.dialect.name == "sqlite" else {}
    )
    indexes = inspector.get_indexes(table.name, **options)
    # A partial unique index (`... WHERE deleted IS NULL`) leaves the other rows free to
    # repeat a value, and an expression index names no column: neither makes one unique.
    groups += [
        index["column_names"]
        for index in indexes
        if index["unique"]
        and not any(option.endswith("_where") for option in index.get("dialect_options", {}))
    ]
    return {str(group[0]) for group in groups if len(group) == 1 and group[0] is not None}


def _mark_json(connection: sa.Connection, metadata: sa.MetaData) -> None:
    """A JSON null is stored as SQL NULL, as every other value's absence is; MariaDB's
    JSON is a LONGTEXT with a json_valid check, which makes it JSON here too."""
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                column.type.none_as_null = True
    if getattr(connection.dialect, "is_mariadb", False):
        for table_name, column_name in connection.execute(_MARIADB_JSON):
            holder = metadata.tables.get(table_name)
            if holder is not None and column_name in holder.columns:
                holder.columns[column_name].type = sa.JSON(none_as_null=True)


def build_tables(
    spec: SqlServiceSpec, reflected: Reflected
) -> tuple[dict[str, TableModel], list[FieldError]]:
    """The exposed tables, and every way the spec and the database disagree.

    With `"*"` a table that cannot be served (no single-column key, or a name that is
    no plain identifier, so no path segment) is left out rather than refused, and a
    table named `queries` is hidden behind the named queries.
    """
    tables: dict[str, TableModel] = {}
    problems: list[FieldError] = []
    if spec.tables == "*":
        for name in sorted(reflected.unique):
            found: list[FieldError] = []
            model = _table(name, TableSpec(), reflected, found)
            served = IDENTIFIER.match(name) and name != "queries"
            if model is not None and not found and served:
                tables[name] = model
        return tables, problems
    for name, table_spec in spec.tables.items():
        if name not in reflected.metadata.tables:
            problems.append(_problem(["tables", name], f"the database has no table {name!r}"))
            continue
        model = _table(name, table_spec, reflected, problems)
        if model is not None:
            tables[name] = model
    return tables, problems


def _problem(loc: list[Any], msg: str) -> FieldError:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _table(
    name: str, spec: TableSpec, reflected: Reflected, problems: list[FieldError]
) -> TableModel | None:
    table = reflected.metadata.tables[name]
    start = len(problems)
    for field_name, listed in (
        ("columns", spec.columns or []),
        ("read_only", spec.read_only),
        ("hidden", spec.hidden),
    ):
        for index, column_name in enumerate(listed):
            if column_name not in table.columns:
                problems.append(
                    _problem(
                        ["tables", name, field_name, index], f"{name} has no column {column_name!r}"
                    )
                )
    columns = {
        str(column.name): _column(column, spec, reflected.dialect)
        for column in table.columns
        if (spec.columns is None or column.name in spec.columns) and column.name not in spec.hidden
    }
    key = _key(name, spec, table, columns, reflected, problems)
    if "create" in spec.operations:
        for column in table.columns:
            model = columns.get(column.name) or _column(column, spec, reflected.dialect)
            if model.required and not (column.name in columns and model.writable):
                problems.append(
                    _problem(
                        ["tables", name, "operations"],
                        f"creating a row in {name} needs column {column.name!r}, which the "
                        "service cannot write (hidden, read-only or of an unsupported type)",
                    )
                )
    if key is None or len(problems) > start:
        return None
    return TableModel(
        name=name,
        table=table,
        description=spec.description or table.comment,
        operations=frozenset(spec.operations),
        columns=columns,
        key=key,
        distinct=frozenset(
            column_name
            for column_name in reflected.unique.get(name, set())
            if column_name in columns and not columns[column_name].nullable
        ),
    )


def _key(
    name: str,
    spec: TableSpec,
    table: sa.Table,
    columns: dict[str, ColumnModel],
    reflected: Reflected,
    problems: list[FieldError],
) -> ColumnModel | None:
    loc = ["tables", name, "key"]
    primary = [column.name for column in table.primary_key.columns]
    key_name = spec.key or (primary[0] if len(primary) == 1 else None)
    if key_name is None:
        problems.append(
            _problem(loc, f"{name} has no single-column primary key: name a unique key column")
        )
        return None
    if key_name not in table.columns:
        problems.append(_problem(loc, f"{name} has no column {key_name!r}"))
        return None
    if key_name not in columns:
        problems.append(_problem(loc, f"the key column {key_name!r} must be exposed, not hidden"))
        return None
    key = columns[key_name]
    if key_name not in reflected.unique.get(name, set()):
        problems.append(_problem(loc, f"the key column {key_name!r} is not unique in {name}"))
    elif key.nullable:
        problems.append(_problem(loc, f"the key column {key_name!r} must be NOT NULL"))
    elif key.type.kind not in COMPARABLE:
        problems.append(_problem(loc, f"a {key.type.kind} column cannot be a key"))
    else:
        return key
    return None


def _read(column: sa.Column[Any], raw: bool) -> sa.ColumnElement[Any]:
    """MySQL sends a single-precision FLOAT rounded to 6 digits, which would not compare
    equal to itself in a cursor: it is read as the DOUBLE it exactly converts to."""
    if raw:
        return sa.type_coerce(column, NullType()).label(column.name)
    if type(column.type) is mysql.FLOAT:
        return sa.cast(column, mysql.DOUBLE(asdecimal=False)).label(column.name)
    return column


def _column(column: sa.Column[Any], spec: TableSpec, dialect: str) -> ColumnModel:
    vtype = value_type(column.type, dialect)
    generated = column.computed is not None or bool(column.identity and column.identity.always)
    has_default = (
        column.server_default is not None
        or column.default is not None
        or column.table.autoincrement_column is column
        or column.identity is not None
        or generated
    )
    nullable = bool(column.nullable) and not column.primary_key
    raw = dialect == "sqlite"
    return ColumnModel(
        name=str(column.name),  # not SQLAlchemy's quoted_name: names go out in JSON
        column=column,
        type=vtype,
        nullable=nullable,
        required=not nullable and not has_default,
        writable=vtype.writable and not generated and column.name not in spec.read_only,
        read=_read(column, raw),
        raw=raw,
        description=column.comment,
    )
