"""The service's OpenAPI 3.1 document, generated from the reflected tables and the spec.

Paths are relative to the service (the gateway mounts them under `/{service}`), and the
components are named `{service}.{table}...` so documents of many services merge without
clashes. Error answers point at `#/components/schemas/Problem`, which the gateway defines.
"""

from __future__ import annotations

from typing import Any

from servicebay.services.sql.filters import OPERATORS
from servicebay.services.sql.queries import PARAM_TYPES, NamedQuery
from servicebay.services.sql.schema import ColumnModel, TableModel
from servicebay.services.sql.spec import SqlServiceSpec
from servicebay.services.sql.values import SORTABLE, Kind, ValueType

Schema = dict[str, Any]

_ERRORS = {
    "400": "Invalid input: `errors` lists every bad field with its place (`loc`).",
    "404": "No row has this key.",
    "409": "A constraint (unique, foreign key, check, not null) forbids it; `detail` names it.",
}
_KIND_SCHEMAS: dict[Kind, Schema] = {
    Kind.INTEGER: {"type": "integer"},
    Kind.FLOAT: {"type": "number"},
    Kind.BOOLEAN: {"type": "boolean"},
    Kind.STRING: {"type": "string"},
    Kind.DATE: {"type": "string", "format": "date"},
    Kind.TIME: {"type": "string", "description": "A time of day, HH:MM:SS[.ffffff]."},
    Kind.UUID: {"type": "string", "format": "uuid"},
    Kind.JSON: {"description": "Any JSON value."},
    Kind.BYTES: {"type": "string", "contentEncoding": "base64"},
    Kind.OPAQUE: {"type": "string", "description": "Shown as text; not writable."},
}


def document(
    spec: SqlServiceSpec, tables: dict[str, TableModel], queries: dict[str, NamedQuery]
) -> Schema:
    schemas: dict[str, Schema] = {}
    paths: dict[str, Any] = {}
    for table in tables.values():
        _Table(spec, table).add(paths, schemas)
    for query in queries.values():
        paths[f"/queries/{query.name}"] = {"get": _query_operation(spec, query)}
    return {
        "openapi": "3.1.0",
        "info": {"title": spec.name, "version": "1", "description": spec.description},
        "tags": [{"name": spec.name, "description": spec.description}],
        "paths": paths,
        "components": {"schemas": schemas},
    }


def value_schema(vtype: ValueType, *, writing: bool) -> Schema:
    """Decimals are answered as strings and accepted as strings or numbers; a naive
    date-time has no offset, so it is not an RFC 3339 `date-time`."""
    if vtype.kind is Kind.DECIMAL:
        digits = (
            f" ({vtype.precision} digits, {vtype.scale} after the point)" if vtype.precision else ""
        )
        schema: Schema = {
            "type": ["string", "number"] if writing else "string",
            "format": "decimal",
            "description": f"An exact decimal, answered as a string{digits}.",
        }
    elif vtype.kind is Kind.DATETIME:
        schema = {"type": "string", "format": "date-time"}
        if not vtype.timezone:
            schema = {
                "type": "string",
                "description": "A date and time without offset (ISO 8601); "
                "input with an offset is stored as UTC.",
            }
    else:
        schema = dict(_KIND_SCHEMAS[vtype.kind])
    if vtype.kind is Kind.INTEGER:
        schema.update(minimum=vtype.minimum, maximum=vtype.maximum)
    if vtype.kind is Kind.STRING and vtype.max_length is not None:
        schema["maxLength"] = vtype.max_length
    if vtype.choices is not None:
        schema["enum"] = list(vtype.choices)
    return schema


def column_schema(column: ColumnModel, *, writing: bool) -> Schema:
    schema = value_schema(column.type, writing=writing)
    if column.nullable and "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if column.description:
        schema["description"] = column.description
    if not column.writable and not writing:
        schema["readOnly"] = True
    return schema


def _error_responses(*statuses: str) -> dict[str, Any]:
    return {
        status: {
            "description": _ERRORS[status],
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class _Table:
    """One table's paths and components."""

    def __init__(self, spec: SqlServiceSpec, table: TableModel) -> None:
        self.spec = spec
        self.table = table
        self.prefix = f"{spec.name}.{table.name}"
        self.about = table.description or f"Rows of the table {table.name}."

    def ref(self, suffix: str = "") -> Schema:
        return {"$ref": f"#/components/schemas/{self.prefix}{suffix}"}

    def operation(self, verb: str, summary: str, description: str, **fields: Any) -> dict[str, Any]:
        return {
            "tags": [self.spec.name],
            "operationId": f"{self.spec.name}.{self.table.name}.{verb}",
            "summary": summary,
            "description": f"{description}\n\n{self.about}",
            **fields,
        }

    def add(self, paths: dict[str, Any], schemas: dict[str, Schema]) -> None:
        columns = list(self.table.columns.values())
        writable = [column for column in columns if column.writable]
        schemas[self.prefix] = {
            "type": "object",
            "description": self.about,
            "properties": {column.name: column_schema(column, writing=False) for column in columns},
        }
        schemas[f"{self.prefix}.create"] = {
            "type": "object",
            "description": f"A new row of {self.table.name}: omitted columns take their defaults.",
            "properties": {column.name: column_schema(column, writing=True) for column in writable},
            "required": [column.name for column in writable if column.required],
            "additionalProperties": False,
        }
        schemas[f"{self.prefix}.update"] = {
            "type": "object",
            "description": f"The columns of a {self.table.name} row to change.",
            "properties": {column.name: column_schema(column, writing=True) for column in writable},
            "minProperties": 1,
            "additionalProperties": False,
        }
        schemas[f"{self.prefix}.list"] = {
            "type": "object",
            "required": ["data", "next"],
            "properties": {
                "data": {"type": "array", "items": self.ref()},
                "next": {
                    "type": ["string", "null"],
                    "description": "The cursor of the next page; null on the last.",
                },
            },
        }
        operations = self.table.operations
        collection: dict[str, Any] = {}
        item: dict[str, Any] = {}
        if "read" in operations:
            collection["get"] = self.list_operation()
            item["get"] = self.get_operation()
        if "create" in operations:
            collection["post"] = self.create_operation()
        if "update" in operations:
            item["patch"] = self.update_operation()
        if "delete" in operations:
            item["delete"] = self.delete_operation()
        if collection:
            paths[f"/{self.table.name}"] = collection
        if item:
            key = self.table.key
            item["parameters"] = [
                {
                    "name": key.name,
                    "in": "path",
                    "required": True,
                    "description": f"The row's {key.name}.",
                    "schema": value_schema(key.type, writing=True),
                }
            ]
            paths[f"/{self.table.name}/{{{key.name}}}"] = item

    def list_operation(self) -> dict[str, Any]:
        columns = list(self.table.columns.values())
        sortable = [column.name for column in columns if column.type.kind in SORTABLE]
        filters = [
            {
                "name": column.name,
                "in": "query",
                "required": False,
                "description": f"Filter on {column.name}: `value` (equal) or `op.value`.",
                "schema": {"type": "string"},
            }
            for column in columns
        ]
        controls = [
            _query_param(
                "select", "Columns to answer, comma-separated (default: all).", {"type": "string"}
            ),
            _query_param(
                "order",
                "Columns to order by, comma-separated, each optionally `.asc` or `.desc`: "
                f"any of {', '.join(sortable)}. NULLs come last ascending, first descending.",
                {"type": "string"},
            ),
            _query_param(
                "limit",
                f"Rows per page; more than {self.spec.max_limit} is refused.",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.spec.max_limit,
                    "default": min(self.spec.default_limit, self.spec.max_limit),
                },
            ),
            _query_param(
                "cursor",
                "The `next` of the previous page, with the same `order`.",
                {"type": "string"},
            ),
        ]
        return self.operation(
            "list",
            f"List {self.table.name}",
            "Rows matching every filter, a page at a time. A filter is `column=value` or "
            f"`column=op.value` with op one of {', '.join(OPERATORS)}: `in.(a,b)` "
            "(double quotes protect commas), `is.null`, `is.true`, `is.false`; `like` and "
            "`ilike` take `*` or `%` as wildcard. Pages stay consistent while rows are added.",
            parameters=[*filters, *controls],
            responses={
                "200": _json(self.ref(".list"), "A page of rows."),
                **_error_responses("400"),
            },
        )

    def get_operation(self) -> dict[str, Any]:
        return self.operation(
            "get",
            f"Get one {self.table.name} by {self.table.key.name}",
            "The row whose key is given, or 404.",
            parameters=[
                _query_param("select", "Columns to answer, comma-separated.", {"type": "string"})
            ],
            responses={"200": _json(self.ref(), "The row."), **_error_responses("400", "404")},
        )

    def create_operation(self) -> dict[str, Any]:
        many = {
            "type": "array",
            "items": self.ref(".create"),
            "minItems": 1,
            "maxItems": self.spec.max_limit,
        }
        created_many = {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": self.ref()},
                "next": {"type": "null"},
            },
        }
        return self.operation(
            "create",
            f"Create {self.table.name} rows",
            "An object creates one row and answers it; an array creates all its rows in one "
            'transaction (all or none) and answers `{"data": [...]}`. The answer is the rows as '
            "stored, with defaults and generated keys.",
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": {"oneOf": [self.ref(".create"), many]}}},
            },
            responses={
                "201": _json({"oneOf": [self.ref(), created_many]}, "The created row or rows."),
                **_error_responses("400", "409"),
            },
        )

    def update_operation(self) -> dict[str, Any]:
        return self.operation(
            "update",
            f"Change one {self.table.name}",
            "Sets the columns given and answers the row as stored.",
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": self.ref(".update")}},
            },
            responses={
                "200": _json(self.ref(), "The updated row."),
                **_error_responses("400", "404", "409"),
            },
        )

    def delete_operation(self) -> dict[str, Any]:
        return self.operation(
            "delete",
            f"Delete one {self.table.name}",
            "Deletes the row; 409 when a foreign key still points at it.",
            responses={"204": {"description": "Deleted."}, **_error_responses("400", "404", "409")},
        )


def _query_param(name: str, description: str, schema: Schema) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _query_operation(spec: SqlServiceSpec, query: NamedQuery) -> dict[str, Any]:
    parameters = []
    for name, param in query.spec.params.items():
        schema = value_schema(PARAM_TYPES[param.type][0], writing=True)
        if param.default is not None:
            schema["default"] = param.default
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": param.required and param.default is None,
                "description": param.description or f"The {param.type} {name}.",
                "schema": schema,
            }
        )
    rows = {
        "type": "object",
        "required": ["data", "next"],
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "next": {"type": "null"},
        },
    }
    return {
        "tags": [spec.name],
        "operationId": f"{spec.name}.queries.{query.name}",
        "summary": f"Run the query {query.name}",
        "description": query.spec.description
        or f"The named query {query.name}: its rows, all of them.",
        "parameters": parameters,
        "responses": {"200": _json(rows, "The query's rows."), **_error_responses("400")},
    }
