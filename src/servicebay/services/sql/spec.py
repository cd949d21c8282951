"""`service.json` of kind `sql`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from servicebay.core.secret_store import SECRET_NAME
from servicebay.services.spec import ServiceSpec, SpecModel

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TableOperation = Literal["read", "create", "update", "delete"]
ParamType = Literal["string", "integer", "number", "boolean", "date", "datetime"]


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier")
    return value


class TableSpec(SpecModel):
    description: str | None = Field(default=None, max_length=2000)
    key: str | None = Field(default=None, description="Lookup column; default: the primary key.")
    operations: list[TableOperation] = Field(
        default=["read"], description="What the service allows on the table."
    )
    columns: list[str] | None = Field(default=None, description="Exposed columns; default all.")
    read_only: list[str] = Field(default_factory=list, alias="read only")
    hidden: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _key(cls, key: str | None) -> str | None:
        return None if key is None else _identifier(key, "key column")

    @field_validator("columns", "read_only", "hidden")
    @classmethod
    def _columns(cls, columns: list[str] | None) -> list[str] | None:
        return None if columns is None else [_identifier(name, "column") for name in columns]


class QueryParam(SpecModel):
    type: ParamType = "string"
    required: bool = True
    default: Any = None
    description: str | None = None


class QuerySpec(SpecModel):
    sql: str = Field(min_length=1, max_length=20_000)
    description: str | None = Field(default=None, max_length=2000)
    params: dict[str, QueryParam] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _shorthand(cls, params: Any) -> Any:
        """`{"day": "date"}` is short for `{"day": {"type": "date"}}`."""
        if isinstance(params, dict):
            return {
                name: {"type": value} if isinstance(value, str) else value
                for name, value in params.items()
            }
        return params

    @model_validator(mode="after")
    def _params_are_named(self) -> QuerySpec:
        for name in self.params:
            _identifier(name, "parameter")
        return self


class SqlServiceSpec(ServiceSpec):
    kind: Literal["sql"]
    secret: str = Field(description="The secret that holds the database's SQLAlchemy URL.")
    tables: Literal["*"] | dict[str, TableSpec] = "*"
    queries: dict[str, QuerySpec] = Field(default_factory=dict)
    default_limit: int = Field(default=100, ge=1, le=10_000)
    max_limit: int = Field(default=1000, ge=1, le=10_000)

    @field_validator("secret")
    @classmethod
    def _secret_is_a_name(cls, secret: str) -> str:
        # The message never repeats the value: a URL pasted here by mistake holds a password.
        if not SECRET_NAME.fullmatch(secret):
            raise ValueError(
                "`secret` names a secret (UPPER_CASE, e.g. SALES_DB_URL) that holds the "
                "database URL; store the URL with `bay secrets set`, never in this file"
            )
        return secret

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: Any) -> Any:
        if isinstance(tables, dict):
            for name in tables:
                _identifier(name, "table")
                if name == "queries":
                    raise ValueError("a table named 'queries' would hide the named queries")
        return tables

    @field_validator("queries")
    @classmethod
    def _query_names(cls, queries: dict[str, QuerySpec]) -> dict[str, QuerySpec]:
        for name in queries:
            _identifier(name, "query")
        return queries
